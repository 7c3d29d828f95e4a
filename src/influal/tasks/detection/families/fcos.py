"""The FCOS family (torchvision FCOS): builder and head adapter.

Final layers: cls_logits, bbox_reg, bbox_ctrness (3x3 convs on the towers). The adapter re-runs the
towers and the final convolutions itself because torchvision's FCOSHead.forward fuses them and returns only
the flattened outputs: the per-image loss is torchvision's own public FCOS.compute_loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from ..backbones import TinyBackbone, resnet50_fpn
from . import FAMILIES
from .base import DetectorFamily, HeadAdapter, _flatten_levels


class FCOSAdapter(HeadAdapter):
    """torchvision FCOS: final layers ``cls_logits``, ``bbox_reg``, ``bbox_ctrness`` (3x3 convs on the towers)."""

    final_layers = ("head.classification_head.cls_logits", "head.regression_head.bbox_reg",
                    "head.regression_head.bbox_ctrness")

    def _towers(self, images: list[torch.Tensor], targets: list[dict] | None):
        net = self.net
        image_list, targets = net.transform(images, targets)
        feats = list(net.backbone(image_list.tensors).values())
        cls_t = [net.head.classification_head.conv(f) for f in feats]
        reg_t = [net.head.regression_head.conv(f) for f in feats]
        return image_list, targets, feats, cls_t, reg_t

    def trunk(self, images, targets):
        image_list, targets, feats, cls_t, reg_t = self._towers(images, targets)
        anchors = self.net.anchor_generator(image_list, feats)
        return {"targets": targets, "anchors": anchors, "cls_t": cls_t, "reg_t": reg_t,
                "num_anchors_per_level": [f.size(2) * f.size(3) for f in feats], "n": len(images)}

    def pre_activations(self, trunk, weights):
        out = {}
        for name, tower in zip(self.final_layers, ("cls_t", "reg_t", "reg_t")):
            w, b = weights[name]
            out[name] = [(F.conv2d(t, w, b, padding=1), None) for t in trunk[tower]]
        return out

    def image_losses(self, trunk, z):
        cls_name, reg_name, ctr_name = self.final_layers
        num_classes = self.net.head.classification_head.num_classes
        outputs = {"cls_logits": _flatten_levels([t for t, _ in z[cls_name]], num_classes),
                   "bbox_regression": _flatten_levels([F.relu(t) for t, _ in z[reg_name]], 4),
                   "bbox_ctrness": _flatten_levels([t for t, _ in z[ctr_name]], 1)}
        losses = []
        for i in range(trunk["n"]):
            parts = self.net.compute_loss([trunk["targets"][i]], {k: v[i:i + 1] for k, v in outputs.items()},
                                          [trunk["anchors"][i]], trunk["num_anchors_per_level"])
            losses.append(sum(parts.values()))
        return torch.stack(losses)

    def head_features(self, images):
        """Global average pool of the classification and regression towers over every level: [n, 2C]."""
        _, _, _, cls_t, reg_t = self._towers(images, None)
        total = sum(t.shape[2] * t.shape[3] for t in cls_t)
        pooled = [sum(t.sum(dim=(2, 3)) for t in towers) / total for towers in (cls_t, reg_t)]
        return torch.cat(pooled, dim=1)
def build(backbone: str, num_classes: int, *, min_size: int, max_size: int, score_thresh: float, detections: int,
          pretrained: bool = False, trainable_layers: int = 3) -> nn.Module:
    if backbone == "tiny":
        body = TinyBackbone()
        anchors = AnchorGenerator(tuple((s,) for s in TinyBackbone.strides), ((1.0,),) * len(TinyBackbone.strides))
        head = FCOSHead(body.out_channels, 1, num_classes + 1, num_convs=2)
        return FCOS(body, num_classes + 1, min_size=min_size, max_size=max_size, anchor_generator=anchors, head=head,
                    score_thresh=score_thresh, detections_per_img=detections)
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = resnet50_fpn(pretrained=pretrained, trainable_layers=trainable_layers, returned_layers=[2, 3, 4],
                        extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(body, num_classes + 1, min_size=min_size, max_size=max_size, score_thresh=score_thresh,
                detections_per_img=detections)


FAMILY = DetectorFamily("fcos", FCOSAdapter, build)

FAMILIES.register(FAMILY.name, FAMILY)
