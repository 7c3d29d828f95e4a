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
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..backbones import TinyBackbone, resnet50_fpn
from . import FAMILIES
from .base import DetectorFamily, HeadAdapter, _flatten_levels


def match_locations(anchors: torch.Tensor, boxes: list[torch.Tensor], num_anchors_per_level: list[int],
                    radius: float) -> torch.Tensor:
    """torchvision's FCOS assignment (``FCOS.compute_loss``) of every location to a box, for a batch at once:
    [n, A] box indices, -1 for background. A location takes the smallest box that holds it, whose centre lies
    within ``radius`` strides of it, and whose largest side distance fits the location's level (4-8 strides,
    open at the first and last level). The same numbers as torchvision's, from element-wise maxima and minima
    instead of reductions over 2- and 4-long axes (those dominated the scoring pass)."""
    n, a = anchors.shape[:2]
    most = max((len(b) for b in boxes), default=0)
    if most == 0:
        return torch.full((n, a), -1, dtype=torch.int64, device=anchors.device)
    gt = anchors.new_zeros((n, most, 4))
    real = torch.zeros((n, most), dtype=torch.bool, device=anchors.device)
    for i, b in enumerate(boxes):
        gt[i, :len(b)], real[i, :len(b)] = b, True
    centres = (anchors[..., :2] + anchors[..., 2:]) / 2                                   # [n, A, 2]
    sizes = anchors[..., 2] - anchors[..., 0]                                             # [n, A]
    gt_centres = (gt[..., :2] + gt[..., 2:]) / 2                                          # [n, M, 2]
    x, y = centres[..., 0, None], centres[..., 1, None]                                   # [n, A, 1]
    x0, y0, x1, y1 = (gt[:, None, :, k] for k in range(4))                                # [n, 1, M]
    offset = torch.maximum((x - gt_centres[:, None, :, 0]).abs(), (y - gt_centres[:, None, :, 1]).abs())
    match = offset < radius * sizes[..., None]
    left, top, right, bottom = x - x0, y - y0, x1 - x, y1 - y
    match &= torch.minimum(torch.minimum(left, top), torch.minimum(right, bottom)) > 0
    lower, upper = sizes * 4, sizes * 8
    lower[:, :num_anchors_per_level[0]] = 0
    upper[:, -num_anchors_per_level[-1]:] = float("inf")
    reach = torch.maximum(torch.maximum(left, top), torch.maximum(right, bottom))
    match &= (reach > lower[..., None]) & (reach < upper[..., None]) & real[:, None, :]
    areas = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    values, matched = (match.to(torch.float32) * (1e8 - areas[:, None, :])).max(dim=2)
    matched[values < 1e-5] = -1
    return matched


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
        """Towers, anchors and every loss target that does not depend on the final layers: the foreground
        locations of each image, their classes (one-hot), boxes and centre-ness targets, as torchvision's
        ``FCOSHead.compute_loss`` builds them."""
        image_list, targets, feats, cls_t, reg_t = self._towers(images, targets)
        return self._trunk(image_list, targets, feats, cls_t, reg_t)

    def pseudo_trunk(self, images, min_score, keep):
        """The trunk at the detector's own detections, from one pass through the backbone and towers (instead of
        one to detect and one for the trunk): ``(trunk, keep(detections))``, the detections exactly those of
        ``net(images)`` post-processed at ``min_score`` and mapped to the images' coordinates and back as
        ``trunk(images, targets)`` maps its targets."""
        net = self.net
        original = [tuple(im.shape[-2:]) for im in images]
        image_list, _, feats, cls_t, reg_t = self._towers(images, None)
        z = self.pre_activations({"cls_t": cls_t, "reg_t": reg_t}, self.current_weights(detach=True))
        per_level = [f.size(2) * f.size(3) for f in feats]
        outputs = {k: list(v.split(per_level, dim=1)) for k, v in self._head_outputs(z).items()}
        anchors = [list(a.split(per_level)) for a in net.anchor_generator(image_list, feats)]
        with self.score_floor(min_score):
            detections = net.postprocess_detections(outputs, anchors, image_list.image_sizes)
        targets = keep(net.transform.postprocess(detections, image_list.image_sizes, original))
        resized = [dict(t, boxes=resize_boxes(t["boxes"], o, s)) for t, o, s in zip(targets, original,
                                                                                     image_list.image_sizes)]
        return self._trunk(image_list, resized, feats, cls_t, reg_t), targets

    def _head_outputs(self, z):
        """torchvision's flattened head outputs from the final layers' pre-activations."""
        cls_name, reg_name, ctr_name = self.final_layers
        num_classes = self.net.head.classification_head.num_classes
        return {"cls_logits": _flatten_levels([t for t, _ in z[cls_name]], num_classes),
                "bbox_regression": _flatten_levels([F.relu(t) for t, _ in z[reg_name]], 4),
                "bbox_ctrness": _flatten_levels([t for t, _ in z[ctr_name]], 1)}

    def _trunk(self, image_list, targets, feats, cls_t, reg_t):
        anchors = torch.stack(self.net.anchor_generator(image_list, feats))
        num_anchors_per_level = [f.size(2) * f.size(3) for f in feats]
        matched = match_locations(anchors, [t["boxes"] for t in targets], num_anchors_per_level,
                                  self.net.center_sampling_radius)
        num_classes = self.net.head.classification_head.num_classes
        n, a = anchors.shape[:2]
        classes = torch.full((n, a), -1, dtype=torch.int64, device=anchors.device)
        gt_boxes = anchors.new_zeros((n, a, 4))
        for i, (t, m) in enumerate(zip(targets, matched)):
            if len(t["labels"]):
                classes[i] = torch.where(m >= 0, t["labels"][m.clip(min=0)], -1)
                gt_boxes[i] = t["boxes"][m.clip(min=0)]
        fg = classes >= 0
        onehot = torch.zeros((n, a, num_classes), device=anchors.device)
        onehot[fg, classes[fg]] = 1.0
        reg = self.net.head.box_coder.encode(anchors, gt_boxes)
        lr_min, lr_max = torch.minimum(reg[..., 0], reg[..., 2]), torch.maximum(reg[..., 0], reg[..., 2])
        tb_min, tb_max = torch.minimum(reg[..., 1], reg[..., 3]), torch.maximum(reg[..., 1], reg[..., 3])
        ctrness = torch.sqrt((lr_min / lr_max) * (tb_min / tb_max))
        flat = fg.reshape(-1).nonzero().squeeze(1)
        return {"cls_t": cls_t, "reg_t": reg_t, "anchors": anchors, "onehot": onehot, "fg_index": flat,
                "fg_image": flat // a, "fg_boxes": gt_boxes.reshape(-1, 4)[flat],
                "fg_ctrness": ctrness.reshape(-1)[flat], "num_fg": fg.sum(1).clamp(min=1).to(anchors.dtype), "n": n}

    def pre_activations(self, trunk, weights):
        out = {}
        for name, tower in zip(self.final_layers, ("cls_t", "reg_t", "reg_t")):
            w, b = weights[name]
            out[name] = [(F.conv2d(t, w, b, padding=1), None) for t in trunk[tower]]
        return out

    def image_losses(self, trunk, z):
        """Each image's FCOS training loss alone, for a whole batch at once: torchvision's ``FCOSHead.compute_loss``
        (focal loss, GIoU on the foreground, centre-ness BCE, each over the image's foreground count), with the
        sums taken per image instead of over the batch."""
        outputs = self._head_outputs(z)
        cls_logits, regression = outputs["cls_logits"], outputs["bbox_regression"]
        ctr_logits = outputs["bbox_ctrness"].reshape(-1)
        n, index, rows = trunk["n"], trunk["fg_index"], trunk["fg_image"]
        loss = sigmoid_focal_loss(cls_logits, trunk["onehot"], reduction="none").sum((1, 2))
        boxes = self.net.head.box_coder.decode(regression, trunk["anchors"]).reshape(-1, 4)[index]
        fg = generalized_box_iou_loss(boxes, trunk["fg_boxes"], reduction="none") + \
            F.binary_cross_entropy_with_logits(ctr_logits[index], trunk["fg_ctrness"], reduction="none")
        loss = loss + loss.new_zeros(n).index_add(0, rows, fg)
        return loss / trunk["num_fg"]

    def join(self, trunks):
        if len({t["anchors"].shape[1:] for t in trunks}) != 1:
            return None
        offsets = torch.tensor([0] + [t["anchors"].shape[0] * t["anchors"].shape[1] for t in trunks[:-1]]).cumsum(0)
        images = torch.tensor([0] + [t["n"] for t in trunks[:-1]]).cumsum(0)
        out = {key: [torch.cat(levels) for levels in zip(*(t[key] for t in trunks))] for key in ("cls_t", "reg_t")}
        for key in ("anchors", "onehot", "fg_boxes", "fg_ctrness", "num_fg"):
            out[key] = torch.cat([t[key] for t in trunks])
        out["fg_index"] = torch.cat([t["fg_index"] + int(o) for t, o in zip(trunks, offsets)])
        out["fg_image"] = torch.cat([t["fg_image"] + int(i) for t, i in zip(trunks, images)])
        out["n"] = sum(t["n"] for t in trunks)
        return out

    def split(self, trunk):
        n, a = trunk["n"], trunk["anchors"].shape[1]
        out = []
        for i in range(n):
            keep = trunk["fg_image"] == i
            out.append({"cls_t": [t[i:i + 1] for t in trunk["cls_t"]], "reg_t": [t[i:i + 1] for t in trunk["reg_t"]],
                        "anchors": trunk["anchors"][i:i + 1], "onehot": trunk["onehot"][i:i + 1],
                        "fg_index": trunk["fg_index"][keep] - i * a, "fg_image": trunk["fg_image"][keep] - i,
                        "fg_boxes": trunk["fg_boxes"][keep], "fg_ctrness": trunk["fg_ctrness"][keep],
                        "num_fg": trunk["num_fg"][i:i + 1], "n": 1})
        return out

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
