"""The :class:`Detector` wrapper the detection task, its influence hooks and its strategies use, and
:func:`build_detector` for every registered family (``families/``) and backbone (``backbones.py``).

Weights are read only from a local file (``weights``): either a whole detector's ``state_dict`` (keys
``backbone.*``, ``head.*`` / ``rpn.*``, ...; class-specific tensors whose shapes do not fit are left at their
initialisation) or an ImageNet ResNet-50 ``state_dict`` (keys ``conv1.weight``, ``layer1.*``, ...) for the
backbone. Nothing is ever downloaded.

Images are resized with ``min_size``/``max_size`` by torchvision's transform; set both to the data set's image
size (the default here) so small images are not blown up to 800 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...core.errors import ConfigError, DataError
from ...core.torch_utils import eval_mode
from .backbones import BACKBONES
from .families import FAMILIES


@dataclass
class LossInputs:
    """Marks a call ``detector(LossInputs(images, targets))`` that returns per-image losses [n].

    Going through ``forward`` keeps the detector usable behind ``torch.func.functional_call`` wrappers, which
    can only call the model with one argument.
    """

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]


class Detector(nn.Module):
    """A torchvision detector (``self.net``) with the per-image losses and features ISAL and the baselines need.

    - ``detector(images)`` returns post-NMS detections (always in eval mode).
    - ``detector(LossInputs(images, targets))`` returns the summed training loss of every image, shape [n].
    - :meth:`freeze_for_influence` leaves only the heads' final layers trainable, so the shared parameter scopes
      mean: ``weights`` = the final layers' weight tensors (the paper's P), ``all`` = weights and biases.
    """

    def __init__(self, net: nn.Module, kind: str):
        super().__init__()
        self.net = net
        self.kind = kind
        self.adapter = FAMILIES.get(kind).adapter(net)
        self._trainable = {n for n, p in net.named_parameters() if p.requires_grad}

    @property
    def final_layers(self) -> tuple[str, ...]:
        """Module names (relative to this wrapper) of the heads' final layers, in the paper's order."""
        return tuple(f"net.{name}" for name in self.adapter.final_layers)

    def final_parameter_names(self, biases: bool = True) -> list[str]:
        names = []
        for layer in self.final_layers:
            names.append(f"{layer}.weight")
            if biases and self.get_submodule(layer).bias is not None:
                names.append(f"{layer}.bias")
        return names

    def forward(self, x):
        if isinstance(x, LossInputs):
            return self.adapter.losses(x.images, x.targets)
        return self.detect(x)

    def detect(self, images: list[torch.Tensor], min_score: float | None = None) -> list[dict[str, torch.Tensor]]:
        """Post-NMS detections; with ``min_score`` only those scoring at least that (the same boxes as filtering the
        full output afterwards, found faster: :meth:`HeadAdapter.score_floor`)."""
        with eval_mode(self.net), torch.no_grad(), self.adapter.score_floor(min_score):
            return self.net(images)

    def train_losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """torchvision's batch training losses (the model must be in train mode)."""
        return self.net(images, targets)

    def freeze_for_influence(self) -> "Detector":
        names = set(self.final_parameter_names())
        for name, p in self.named_parameters():
            p.requires_grad_(name in names)
        return self

    def restore_trainable(self) -> "Detector":
        for name, p in self.net.named_parameters():
            p.requires_grad_(name in self._trainable)
        return self

    @torch.no_grad()
    def fpn_features(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The backbone's (FPN) feature maps, one [n, C, H, W] tensor per level."""
        image_list, _ = self.net.transform(images, None)
        return list(self.net.backbone(image_list.tensors).values())

    @torch.no_grad()
    def head_features(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.adapter.head_features(images)


def load_weights(detector: Detector, path: str | Path) -> dict[str, list[str]]:
    """Load a local weights file into ``detector`` (see the module notes); returns what was skipped.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code.
    """
    import pickle
    import re

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"weights file {path} does not exist; give a local .pth path (nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        # torch's own text spans many lines and suggests weights_only=False (which would run the file's code):
        # keep one line of it and say what to do instead.
        lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
        found = re.search(r"Unsupported global: GLOBAL (\S+)", " ".join(lines))
        if isinstance(exc, pickle.UnpicklingError) and found:
            raise DataError(f"{path} holds a pickled Python object ({found.group(1)}), not only tensors; influal "
                            "reads weights with weights_only=True and never runs a file's code: save a plain "
                            "state_dict with torch.save(model.state_dict(), path)") from None
        why = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
        why = why.split(". ")[0]
        raise DataError(f"cannot read weights {path} ({type(exc).__name__}{': ' + why[:200] if why else ''}); give "
                        "a file written by torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise DataError(f"{path} holds no state_dict")
    if any(k.startswith("backbone.") for k in state):
        target, prefix = detector.net, ""
    elif "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        body = getattr(detector.net.backbone, "body", None)
        if body is None:
            raise ConfigError(f"{path} holds ResNet backbone weights, but the detector's backbone is not a ResNet")
        target, prefix = body, "backbone.body."
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    else:
        raise DataError(f"{path} is neither a detector state_dict (backbone.* keys) nor a ResNet one (conv1.*, layer1.*)")
    own = target.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    target.load_state_dict(fitting, strict=False)
    missing = sorted(prefix + k for k in own if k not in fitting and not k.endswith("num_batches_tracked"))
    if not fitting:
        raise DataError(f"no tensor of {path} fits the {detector.kind} detector; check the file")
    return {"mismatched": mismatched, "missing": missing}


def build_detector(kind: str, num_classes: int, *, backbone: str = "tiny", weights: str | None = None,
                   min_size: int = 128, max_size: int | None = None, score_thresh: float = 0.05,
                   detections_per_img: int = 100, trainable_layers: int = 3) -> Detector:
    """A fresh detector for ``num_classes`` object classes (labels 1..K; 0 is the background).

    ``score_thresh`` is the post-processing threshold (mmdetection's test setting 0.05); pseudo-labels apply
    their own, higher threshold on top. Seed torch before calling for a reproducible initialisation.
    """
    family = FAMILIES.get(kind)
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown detection backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least one object class, got {num_classes}")
    max_size = min_size if max_size is None else max_size
    net = family.build(backbone, num_classes, min_size=min_size, max_size=max_size, score_thresh=score_thresh,
                       detections=detections_per_img, pretrained=weights is not None, trainable_layers=trainable_layers)
    detector = Detector(net, family.name)
    if weights is not None:
        load_weights(detector, weights)
    return detector
