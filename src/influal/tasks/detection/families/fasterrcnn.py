"""The Faster R-CNN family (torchvision FasterRCNN): builder and head adapter.

Final layers: RPN cls_logits, bbox_pred and RoI cls_score, bbox_pred. The adapter calls
torchvision's public pieces (transform, backbone, rpn.head.conv, anchor_generator,
filter_proposals, assign_targets_to_anchors, select_training_samples, box_roi_pool, box_head,
rpn.compute_loss, fastrcnn_loss) and applies the final layers itself, per image, so that each image's loss
is the detector's training loss on that image alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign

from ..backbones import TinyBackbone, resnet50_fpn
from . import FAMILIES
from .base import ROI_SAMPLING_SEED, RPN_SAMPLING_SEED, DetectorFamily, HeadAdapter, fixed_rng


class FasterRCNNAdapter(HeadAdapter):
    """torchvision Faster R-CNN: final layers RPN ``cls_logits``, ``bbox_pred`` and RoI ``cls_score``, ``bbox_pred``.

    RPN proposals are taken from the current model (the detector detaches them, so the RoI loss does not
    depend on the RPN's parameters); the top-n settings follow the model's train/eval mode, as torchvision's.
    """

    final_layers = ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor.cls_score",
                    "roi_heads.box_predictor.bbox_pred")
    score_threshold_attr = "roi_heads.score_thresh"

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
        image_list, targets, features, rpn_t, anchors = self._rpn_inputs(images, targets)
        return self._trunk(image_list, targets, features, rpn_t, anchors, self._proposals(image_list, rpn_t, anchors))

    def pseudo_trunk(self, images, min_score, keep):
        """The trunk at the detector's own detections from one pass through the backbone, the RPN and its proposals
        (instead of one to detect and one for the trunk): the detections are those of ``net(images)`` in eval mode,
        post-processed at ``min_score``."""
        net, roi = self.net, self.net.roi_heads
        original = [tuple(im.shape[-2:]) for im in images]
        image_list, _, features, rpn_t, anchors = self._rpn_inputs(images, None)
        proposals = self._proposals(image_list, rpn_t, anchors)
        logits, regression = roi.box_predictor(roi.box_head(roi.box_roi_pool(features, proposals,
                                                                             image_list.image_sizes)))
        with self.score_floor(min_score):
            boxes, scores, labels = roi.postprocess_detections(logits, regression, proposals, image_list.image_sizes)
        detections = [{"boxes": b, "labels": c, "scores": p} for b, p, c in zip(boxes, scores, labels)]
        targets = keep(net.transform.postprocess(detections, image_list.image_sizes, original))
        resized = [dict(t, boxes=resize_boxes(t["boxes"], o, size)) for t, o, size in zip(targets, original,
                                                                                          image_list.image_sizes)]
        return self._trunk(image_list, resized, features, rpn_t, anchors, proposals), targets

    def _trunk(self, image_list, targets, features, rpn_t, anchors, proposals):
        net = self.net
        device = rpn_t[0].device
        rpn_labels, rpn_regression = [], []
        roi_props, roi_labels, roi_regression = [], [], []
        for i in range(len(targets)):
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
        rows = torch.repeat_interleave(torch.arange(len(targets), device=device), torch.tensor(counts, device=device))
        return {"rpn_t": rpn_t, "rpn_labels": rpn_labels, "rpn_regression": rpn_regression, "box_features": box_features,
                "roi_counts": counts, "roi_rows": rows, "roi_labels": roi_labels, "roi_regression": roi_regression,
                "n": len(targets)}

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

    def split(self, trunk):
        starts = [0]
        for c in trunk["roi_counts"]:
            starts.append(starts[-1] + c)
        out = []
        for i in range(trunk["n"]):
            count = trunk["roi_counts"][i]
            out.append({"rpn_t": [t[i:i + 1] for t in trunk["rpn_t"]], "rpn_labels": [trunk["rpn_labels"][i]],
                        "rpn_regression": [trunk["rpn_regression"][i]],
                        "box_features": trunk["box_features"][starts[i]:starts[i + 1]], "roi_counts": [count],
                        "roi_rows": trunk["roi_rows"].new_zeros(count), "roi_labels": [trunk["roi_labels"][i]],
                        "roi_regression": [trunk["roi_regression"][i]], "n": 1})
        return out

    def join(self, trunks):
        if len({tuple(t.shape[1:] for t in trunk["rpn_t"]) for trunk in trunks}) != 1:
            return None
        counts = [c for t in trunks for c in t["roi_counts"]]
        device = trunks[0]["box_features"].device
        out = {"rpn_t": [torch.cat(levels) for levels in zip(*(t["rpn_t"] for t in trunks))],
               "box_features": torch.cat([t["box_features"] for t in trunks]), "roi_counts": counts,
               "roi_rows": torch.repeat_interleave(torch.arange(len(counts), device=device),
                                                   torch.tensor(counts, device=device)),
               "n": sum(t["n"] for t in trunks)}
        for key in ("rpn_labels", "rpn_regression", "roi_labels", "roi_regression"):
            out[key] = [item for t in trunks for item in t[key]]
        return out

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
def build(backbone: str, num_classes: int, *, min_size: int, max_size: int, score_thresh: float, detections: int,
          pretrained: bool = False, trainable_layers: int = 3) -> nn.Module:
    if backbone == "tiny":
        body = TinyBackbone()
        anchors = AnchorGenerator(tuple((4 * s,) for s in TinyBackbone.strides), ((0.5, 1.0, 2.0),) * 3)
        pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=5, sampling_ratio=2)
        box_head = TwoMLPHead(body.out_channels * 25, 128)
        return FasterRCNN(body, None, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
                          rpn_pre_nms_top_n_train=300, rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_train=150,
                          rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64, box_roi_pool=pool,
                          box_head=box_head, box_predictor=FastRCNNPredictor(128, num_classes + 1),
                          box_batch_size_per_image=64, box_score_thresh=score_thresh,
                          box_detections_per_img=detections)
    body = resnet50_fpn(pretrained=pretrained, trainable_layers=trainable_layers)
    return FasterRCNN(body, num_classes + 1, min_size=min_size, max_size=max_size, box_score_thresh=score_thresh,
                      box_detections_per_img=detections)


FAMILY = DetectorFamily("fasterrcnn", FasterRCNNAdapter, build)

FAMILIES.register(FAMILY.name, FAMILY)
