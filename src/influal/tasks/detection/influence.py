"""What detection offers the influence engine: one-backward-per-batch g·s on the heads' final layers, and their
Hessian products from the labeled images' trunks, computed once.

The detector's training loss is not convex in its final layers and offers no closed-form Hessian, so ``auto``
resolves to the engine's defaults (scope ``weights``, which after :meth:`Detector.freeze_for_influence` means the
final layers' weight tensors, the paper's P; solver LiSSA) and Hessian products come from double backward through
the final layers and the loss alone.
"""

from __future__ import annotations

import torch

from ...api import InfluenceHooks
from .gradients import per_image_dot, scope_is_final
from .hessian import head_hessian
from .models import Detector
from .task import keep_confident


class DetectionInfluence(InfluenceHooks):
    fuses_pseudo_targets = True
    layers_are_modules = False  # the losses apply the head's final layers functionally on a no-grad trunk

    def __init__(self, task):
        self.task = task

    def per_sample_dot(self, model, inputs, targets, scope, s, method):
        """The heads' fast path (see :mod:`.gradients`); None (generic path) for ``loop`` or other scopes. Without
        ``targets`` the pseudo-boxes come from the same pass as the trunk where the family fuses them."""
        if method == "loop" or not isinstance(model, Detector) or not scope_is_final(model, scope):
            return None
        inputs, trunk = list(inputs), None
        if targets is None:
            with torch.no_grad():
                fused = model.adapter.pseudo_trunk(inputs, self.task.score_threshold, self._keep)
            if fused is not None:
                trunk = fused[0]
            else:
                targets = self.task.pseudo_targets(model, inputs)
        return per_image_dot(model, inputs, targets, scope, s, trunk=trunk)

    def _keep(self, detections):
        return [keep_confident(d, self.task.score_threshold) for d in detections]

    def hessian(self, model, dataset, ids, scope, batch_size):
        """Products from the labeled images' trunks, computed once (:mod:`.hessian`), where the scope lies within
        the heads' final layers and the cache fits; else None (double backward through the detector)."""
        if not isinstance(model, Detector):
            return None
        return head_hessian(model, self.task, dataset, ids, scope, batch_size)
