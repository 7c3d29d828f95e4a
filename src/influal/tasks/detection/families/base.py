"""What every detector family shares: the trunk / final-layer split of a torchvision detector (:class:`HeadAdapter`).

ISAL differentiates only the heads' final layers (spec §1.3). Each family's adapter (``fcos.py``,
``fasterrcnn.py``) cuts a torchvision detector in two: the *trunk* (transform, backbone, FPN, head towers, anchors, target matching, proposal sampling), run once
per batch, and the *final layers* plus the loss, run per image. The final layers are linear in their
parameters, which :mod:`.gradients` exploits for a one-backward-per-batch ``g·s``.

Conventions shared by both adapters:
- ``weights`` maps a final layer's module name (relative to the torchvision model) to ``(weight, bias)``;
  :meth:`pre_activations` applies exactly those tensors, so passing the real parameters gives the loss's graph
  and passing a direction gives the directional change of the outputs.
- :meth:`pre_activations` returns ``[(tensor, rows)]``: ``rows`` is ``None`` when dim 0 indexes images, or an
  int tensor giving each row's image (RoI outputs).
- :meth:`split` and :meth:`join` cut a batch's trunk into per-image trunks and put any of them back together,
  so that the labeled set's trunks can be computed once and Hessian products drawn on any subset of it
  (:mod:`..hessian`).
- The loss of one image is the detector's training loss on that image alone, all terms summed with weight 1
  (spec §1.2). Every random choice of a loss (Faster R-CNN's anchor and RoI sampling) is made per image under a
  fixed seed, so an image's loss does not depend on the batch it is in, nor on the global RNG.
- Boxes in targets are in the caller's image coordinates; the detector's transform maps them as in training.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

Trunk = dict[str, Any]
Weights = dict[str, tuple[torch.Tensor, torch.Tensor | None]]

RPN_SAMPLING_SEED = 1
ROI_SAMPLING_SEED = 2


@contextmanager
def fixed_rng(seed: int, device: torch.device):
    """Run a block under a fixed torch seed and restore the global RNG afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # the generators the block can draw from, not torch.manual_seed: that also queues a seed for every CUDA
        # device, which a CUDA build of torch without a GPU records with a formatted stack trace (about 2 ms,
        # a fifth of Faster R-CNN's scoring pass, measured); the CPU stream is the same either way
        torch.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _flatten_levels(levels: list[torch.Tensor], channels: int) -> torch.Tensor:
    """[N, A*C, H, W] per level -> [N, sum(HWA), C], as torchvision's heads lay their outputs out."""
    out = []
    for z in levels:
        n, _, h, w = z.shape
        out.append(z.view(n, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, channels))
    return torch.cat(out, dim=1)


class HeadAdapter:
    """What :mod:`.gradients` and :class:`~.models.Detector` need from a detector family."""

    final_layers: tuple[str, ...] = ()
    score_threshold_attr: str = "score_thresh"  # the torchvision model's post-processing score threshold (dotted)

    def __init__(self, net: nn.Module):
        self.net = net

    @contextmanager
    def score_floor(self, minimum: float | None):
        """Post-process with a score threshold of at least ``minimum`` (detections scoring ``>= minimum`` kept).

        The detections at or above ``minimum`` are the same as at the model's own lower threshold: a box is
        suppressed only by higher-scoring ones, and the per-level and per-image top-k keep the highest scores
        first, so dropping the lower ones early changes nothing above them; it only skips their NMS."""
        *path, attr = self.score_threshold_attr.split(".")
        owner = self.net
        for part in path:
            owner = getattr(owner, part)
        before = getattr(owner, attr)
        if minimum is not None:  # torchvision keeps scores > threshold: the float32 just below keeps >= minimum
            below = float(np.nextafter(np.float32(minimum), np.float32(-np.inf)))
            setattr(owner, attr, max(before, below))
        try:
            yield
        finally:
            setattr(owner, attr, before)

    def layer(self, name: str) -> nn.Module:
        return self.net.get_submodule(name)

    def current_weights(self, detach: bool = False) -> Weights:
        out = {}
        for name in self.final_layers:
            m = self.layer(name)
            w, b = m.weight, m.bias
            out[name] = (w.detach(), None if b is None else b.detach()) if detach else (w, b)
        return out

    def trunk(self, images: list[torch.Tensor], targets: list[dict] | None) -> Trunk:
        raise NotImplementedError

    def pre_activations(self, trunk: Trunk, weights: Weights) -> dict[str, list[tuple[torch.Tensor, Any]]]:
        raise NotImplementedError

    def image_losses(self, trunk: Trunk, z: dict[str, list[tuple[torch.Tensor, Any]]]) -> torch.Tensor:
        raise NotImplementedError

    def pseudo_trunk(self, images: list[torch.Tensor], min_score: float, keep: Callable) -> tuple[Trunk, list] | None:
        """``(trunk(images, pseudo), pseudo)`` with ``pseudo = keep(detections)``, the detections post-processed at
        ``min_score``, from one pass through the backbone; None where the family does not fuse the two (the caller
        then detects, and builds the trunk, in two passes)."""
        return None

    def split(self, trunk: Trunk) -> list[Trunk] | None:
        """One trunk per image of a batch's trunk, or None if the family cannot (then nothing is cached)."""
        return None

    def join(self, trunks: list[Trunk]) -> Trunk | None:
        """The trunk of several images' trunks (their images in order), or None where they do not stack (images of
        different sizes): the caller then evaluates them one by one."""
        return None

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """Per-image summed losses [n] with the current parameters (differentiable w.r.t. all of them)."""
        trunk = self.trunk(images, targets)
        return self.image_losses(trunk, self.pre_activations(trunk, self.current_weights()))

    def head_features(self, images: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class DetectorFamily:
    """One detector family (one file in this folder): how to build its torchvision model and its adapter.

    ``build(backbone, num_classes, min_size=, max_size=, score_thresh=, detections=, pretrained=,
    trainable_layers=)`` returns the torchvision model for ``num_classes + 1`` labels (0 = background) on the
    backbone ``"tiny"`` or ``"resnet50-fpn"``.
    """

    name: str
    adapter: type
    build: Callable[..., nn.Module]
