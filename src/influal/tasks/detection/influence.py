"""What detection offers the influence engine: one-backward-per-batch g·s on the heads' final layers.

The detector's training loss is not convex in its final layers and offers no closed-form Hessian, so ``auto``
resolves to the engine's defaults (scope ``weights``, which after :meth:`Detector.freeze_for_influence` means the
final layers' weight tensors, the paper's P; solver LiSSA) and Hessian products come from double backward.
"""

from __future__ import annotations

from ...api import InfluenceHooks
from .gradients import per_image_dot
from .models import Detector


class DetectionInfluence(InfluenceHooks):
    def __init__(self, task):
        self.task = task

    def per_sample_dot(self, model, inputs, targets, scope, s, method):
        """The heads' fast path (see :mod:`.gradients`); None (generic path) for ``loop`` or other scopes."""
        if method == "loop" or not isinstance(model, Detector):
            return None
        if targets is None:
            targets = self.task.pseudo_targets(model, inputs)
        return per_image_dot(model, list(inputs), list(targets), scope, s)
