"""torchvision FCOS and Faster R-CNN builders, and the :class:`Detector` wrapper the tasks and strategies use.

Backbones:
- ``tiny``: a five-conv GroupNorm CNN with a three-level FPN (strides 4, 8, 16; 32 channels). It trains on
  CPU in seconds on 128 px images and is what tests and the offline demo use.
- ``resnet50-fpn``: torchvision's ResNet-50-FPN. Weights are read only from a local file (``weights``): either a
  whole detector's ``state_dict`` (keys ``backbone.*``, ``head.*`` / ``rpn.*``, ...; class-specific tensors whose
  shapes do not fit are left at their initialisation) or an ImageNet ResNet-50 ``state_dict`` (keys
  ``conv1.weight``, ``layer1.*``, ...) for the backbone. Nothing is ever downloaded. With weights, BatchNorm is
  frozen and only the last three stages train, as torchvision's builders do.

Images are resized with ``min_size``/``max_size`` by torchvision's transform; set both to the data set's image
size (the default here) so small images are not blown up to 800 px.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

from ..errors import ConfigError, DataError
from .heads import make_adapter

DETECTORS = ("fcos", "fasterrcnn")
BACKBONES = ("tiny", "resnet50-fpn")


@dataclass
class LossInputs:
    """Marks a call ``detector(LossInputs(images, targets))`` that returns per-image losses [n].

    Going through ``forward`` keeps the detector usable behind ``torch.func.functional_call`` wrappers, which
    can only call the model with one argument.
    """

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout),
                         nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Conv stem and three stages (strides 4, 8, 16) with an FPN on top; ``out_channels`` per level."""

    strides = (4, 8, 16)

    def __init__(self, width: int = 16, out_channels: int = 32, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(_conv_block(in_channels, width, 2), _conv_block(width, width, 1))
        self.stage1 = _conv_block(width, 2 * width, 2)
        self.stage2 = _conv_block(2 * width, 2 * width, 2)
        self.stage3 = _conv_block(2 * width, 4 * width, 2)
        self.fpn = FeaturePyramidNetwork([2 * width, 2 * width, 4 * width], out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        c1 = self.stage1(self.stem(x))
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return self.fpn(OrderedDict([("0", c1), ("1", c2), ("2", c3)]))


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
        self.adapter = make_adapter(kind, net)
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

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                return self.net(images)
        finally:
            self.net.train(was_training)

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


def _tiny_fcos(num_classes: int, min_size: int, max_size: int, score_thresh: float, detections: int) -> FCOS:
    backbone = TinyBackbone()
    anchors = AnchorGenerator(tuple((s,) for s in TinyBackbone.strides), ((1.0,),) * len(TinyBackbone.strides))
    head = FCOSHead(backbone.out_channels, 1, num_classes + 1, num_convs=2)
    return FCOS(backbone, num_classes + 1, min_size=min_size, max_size=max_size, anchor_generator=anchors, head=head,
                score_thresh=score_thresh, detections_per_img=detections)


def _tiny_fasterrcnn(num_classes: int, min_size: int, max_size: int, score_thresh: float, detections: int
                     ) -> FasterRCNN:
    backbone = TinyBackbone()
    anchors = AnchorGenerator(tuple((4 * s,) for s in TinyBackbone.strides), ((0.5, 1.0, 2.0),) * 3)
    pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=5, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 25, 128)
    return FasterRCNN(backbone, None, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
                      rpn_pre_nms_top_n_train=300, rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_train=150,
                      rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64, box_roi_pool=pool, box_head=box_head,
                      box_predictor=FastRCNNPredictor(128, num_classes + 1), box_batch_size_per_image=64,
                      box_score_thresh=score_thresh, box_detections_per_img=detections)


def _resnet50_fpn(kind: str, num_classes: int, min_size: int, max_size: int, score_thresh: float, detections: int,
                  pretrained: bool, trainable_layers: int) -> nn.Module:
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    norm = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    body = resnet50(weights=None, norm_layer=norm)
    layers = trainable_layers if pretrained else 5
    if kind == "fcos":
        backbone = _resnet_fpn_extractor(body, layers, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
        return FCOS(backbone, num_classes + 1, min_size=min_size, max_size=max_size, score_thresh=score_thresh,
                    detections_per_img=detections)
    backbone = _resnet_fpn_extractor(body, layers)
    return FasterRCNN(backbone, num_classes + 1, min_size=min_size, max_size=max_size, box_score_thresh=score_thresh,
                      box_detections_per_img=detections)


def load_weights(detector: Detector, path: str | Path) -> dict[str, list[str]]:
    """Load a local weights file into ``detector`` (see the module notes); returns what was skipped."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"weights file {path} does not exist; give a local .pth path (nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise DataError(f"cannot read weights {path} ({exc})") from None
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
    if kind not in DETECTORS:
        raise ConfigError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown detection backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least one object class, got {num_classes}")
    max_size = min_size if max_size is None else max_size
    if backbone == "tiny":
        build = _tiny_fcos if kind == "fcos" else _tiny_fasterrcnn
        net = build(num_classes, min_size, max_size, score_thresh, detections_per_img)
    else:
        net = _resnet50_fpn(kind, num_classes, min_size, max_size, score_thresh, detections_per_img,
                            pretrained=weights is not None, trainable_layers=trainable_layers)
    detector = Detector(net, kind)
    if weights is not None:
        load_weights(detector, weights)
    return detector
