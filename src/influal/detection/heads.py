"""Per-image detector losses, split into a shared trunk and the heads' final layers.

ISAL differentiates only the heads' final layers (spec §1.3). Each adapter here cuts a torchvision detector in
two: the *trunk* (transform, backbone, FPN, head towers, anchors, target matching, proposal sampling), run once
per batch, and the *final layers* plus the loss, run per image. The final layers are linear in their
parameters, which :mod:`.gradients` exploits for a one-backward-per-batch ``g·s``.

Conventions shared by both adapters:
- ``weights`` maps a final layer's module name (relative to the torchvision model) to ``(weight, bias)``;
  :meth:`pre_activations` applies exactly those tensors, so passing the real parameters gives the loss's graph
  and passing a direction gives the directional change of the outputs.
- :meth:`pre_activations` returns ``[(tensor, rows)]``: ``rows`` is ``None`` when dim 0 indexes images, or an
  int tensor giving each row's image (RoI outputs).
- The loss of one image is the detector's training loss on that image alone, all terms summed with weight 1
  (spec §1.2). Every random choice of a loss (Faster R-CNN's anchor and RoI sampling) is made per image under a
  fixed seed, so an image's loss does not depend on the batch it is in, nor on the global RNG.
- Boxes in targets are in the caller's image coordinates; the detector's transform maps them as in training.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import concat_box_prediction_layers

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
        torch.manual_seed(seed)
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

    def __init__(self, net: nn.Module):
        self.net = net

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

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """Per-image summed losses [n] with the current parameters (differentiable w.r.t. all of them)."""
        trunk = self.trunk(images, targets)
        return self.image_losses(trunk, self.pre_activations(trunk, self.current_weights()))

    def head_features(self, images: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


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


class FasterRCNNAdapter(HeadAdapter):
    """torchvision Faster R-CNN: final layers RPN ``cls_logits``, ``bbox_pred`` and RoI ``cls_score``, ``bbox_pred``.

    RPN proposals are taken from the current model (the detector detaches them, so the RoI loss does not
    depend on the RPN's parameters); the top-n settings follow the model's train/eval mode, as torchvision's.
    """

    final_layers = ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor.cls_score",
                    "roi_heads.box_predictor.bbox_pred")

    def _rpn_inputs(self, images, targets):
        net = self.net
        image_list, targets = net.transform(images, targets)
        features = net.backbone(image_list.tensors)
        feats = list(features.values())
        rpn_t = [net.rpn.head.conv(f) for f in feats]
        anchors = net.rpn.anchor_generator(image_list, feats)
        return image_list, targets, features, rpn_t, anchors

    def _proposals(self, image_list, rpn_t, anchors) -> list[torch.Tensor]:
        rpn = self.net.rpn
        with torch.no_grad():
            logits = [rpn.head.cls_logits(t) for t in rpn_t]
            deltas = [rpn.head.bbox_pred(t) for t in rpn_t]
            per_level = [o[0].numel() for o in logits]
            objectness, pred = concat_box_prediction_layers(logits, deltas)
            proposals = rpn.box_coder.decode(pred.detach(), anchors).view(len(anchors), -1, 4)
            boxes, _ = rpn.filter_proposals(proposals, objectness, image_list.image_sizes, per_level)
        return boxes

    def trunk(self, images, targets):
        net = self.net
        image_list, targets, features, rpn_t, anchors = self._rpn_inputs(images, targets)
        proposals = self._proposals(image_list, rpn_t, anchors)
        device = rpn_t[0].device
        rpn_labels, rpn_regression = [], []
        roi_props, roi_labels, roi_regression = [], [], []
        for i in range(len(images)):
            labels_i, matched_i = net.rpn.assign_targets_to_anchors([anchors[i]], [targets[i]])
            rpn_labels.append(labels_i[0])
            rpn_regression.append(net.rpn.box_coder.encode(matched_i, [anchors[i]])[0])
            with fixed_rng(ROI_SAMPLING_SEED, device):
                props, _, labels, regression = net.roi_heads.select_training_samples([proposals[i]], [targets[i]])
            roi_props.append(props[0])
            roi_labels.append(labels[0])
            roi_regression.append(regression[0])
        box_features = net.roi_heads.box_head(net.roi_heads.box_roi_pool(features, roi_props, image_list.image_sizes))
        counts = [len(p) for p in roi_props]
        rows = torch.repeat_interleave(torch.arange(len(images), device=device), torch.tensor(counts, device=device))
        return {"rpn_t": rpn_t, "rpn_labels": rpn_labels, "rpn_regression": rpn_regression, "box_features": box_features,
                "roi_counts": counts, "roi_rows": rows, "roi_labels": roi_labels, "roi_regression": roi_regression,
                "n": len(images)}

    def pre_activations(self, trunk, weights):
        rpn_cls, rpn_reg, roi_cls, roi_reg = self.final_layers
        out = {name: [(F.conv2d(t, *weights[name]), None) for t in trunk["rpn_t"]] for name in (rpn_cls, rpn_reg)}
        for name in (roi_cls, roi_reg):
            out[name] = [(F.linear(trunk["box_features"], *weights[name]), trunk["roi_rows"])]
        return out

    def image_losses(self, trunk, z):
        rpn_cls, rpn_reg, roi_cls, roi_reg = self.final_layers
        rpn = self.net.rpn
        objectness, deltas = concat_box_prediction_layers([t for t, _ in z[rpn_cls]], [t for t, _ in z[rpn_reg]])
        n = trunk["n"]
        per_image = objectness.shape[0] // n
        class_logits = z[roi_cls][0][0].split(trunk["roi_counts"])
        box_regression = z[roi_reg][0][0].split(trunk["roi_counts"])
        losses = []
        for i in range(n):
            rows = slice(i * per_image, (i + 1) * per_image)
            with fixed_rng(RPN_SAMPLING_SEED, objectness.device):
                obj_loss, rpn_box_loss = rpn.compute_loss(objectness[rows], deltas[rows], [trunk["rpn_labels"][i]],
                                                          [trunk["rpn_regression"][i]])
            cls_loss, box_loss = fastrcnn_loss(class_logits[i], box_regression[i], [trunk["roi_labels"][i]],
                                               [trunk["roi_regression"][i]])
            losses.append(obj_loss + rpn_box_loss + cls_loss + box_loss)
        return torch.stack(losses)

    def head_features(self, images):
        """Global average pool of the RPN tower over every level, with the mean box-head feature of the
        image's proposals: [n, C + representation size]."""
        net = self.net
        image_list, _, features, rpn_t, anchors = self._rpn_inputs(images, None)
        total = sum(t.shape[2] * t.shape[3] for t in rpn_t)
        rpn_pool = sum(t.sum(dim=(2, 3)) for t in rpn_t) / total
        proposals = self._proposals(image_list, rpn_t, anchors)
        box = net.roi_heads.box_head(net.roi_heads.box_roi_pool(features, proposals, image_list.image_sizes))
        means = [chunk.mean(0) if len(chunk) else box.new_zeros(box.shape[1])
                 for chunk in box.split([len(p) for p in proposals])]
        return torch.cat([rpn_pool, torch.stack(means)], dim=1)


def make_adapter(kind: str, net: nn.Module) -> HeadAdapter:
    return {"fcos": FCOSAdapter, "fasterrcnn": FasterRCNNAdapter}[kind](net)
