"""Object detection as an influal Task: per-image detector losses, pseudo-boxes, COCO AP, cost = boxes.

Conventions:
- A batch is ``(ids, images, targets)``: a list of float ``[3, H, W]`` images in 0..1 and a list of target
  dicts (``boxes`` xyxy in image pixels, ``labels`` 1..K), all on the task's device.
- ``loss`` is the summed detector training loss of each image alone (spec §1.2), evaluated in the model's
  current mode (the influence engine uses eval mode), shape [n].
- ``pseudo_targets``: the detector's own post-NMS detections with score >= ``score_threshold`` (default 0.1,
  the paper's command). An image with no such box gets an empty target, and ISAL scores it with the
  background-only loss: the detector's own belief that the image holds nothing is its pseudo-label, and the
  gradient of that belief is as well defined as any other. (The official code left such images unscored and
  used them only as random filler.)
- ``cost`` is the number of ground-truth boxes of the labeled images; ``evaluate`` returns COCO AP, AP50 and
  AP75 (0..1) on a data set.
- ``train`` fits a fresh detector with SGD (momentum, weight decay, step decay per epoch, a constant warm-up
  at 1/3 of the rate for ``warmup_iters`` iterations and gradient-norm clipping, as mmdetection's FCOS recipe),
  then freezes everything but the heads' final layers, the parameters ISAL differentiates.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError, InflualError
from ..progress import progress_bar
from .gradients import per_image_dot
from .iou import xyxy_to_xywh
from .metrics import coco_ap
from .models import Detector, LossInputs


class TrainingDiverged(InflualError):
    """The detector's training loss became NaN or infinite."""


class DetectionTask:
    metric_name = "AP"

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", batch_size: int = 16,
                 score_threshold: float = 0.1, grad_clip: float | None = 10.0, warmup_iters: int = 50):
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {score_threshold}")
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.score_threshold = score_threshold
        self.grad_clip = grad_clip
        self.warmup_iters = warmup_iters

    # ------------------------------------------------------------------ data
    def batches(self, dataset, ids: Sequence[int], batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        if shuffle:
            ids = ids[torch.randperm(len(ids), generator=generator)]
        n = len(ids)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            batch_ids = ids[start:start + batch_size]
            images, targets = dataset.get_batch(batch_ids.numpy())
            yield (batch_ids, [im.to(self.device, non_blocking=True) for im in images],
                   [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets])

    # ------------------------------------------------------------------ what the influence engine calls
    def loss(self, model, inputs: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        return model(LossInputs(list(inputs), list(targets)))

    @torch.no_grad()
    def pseudo_targets(self, model, inputs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [keep_confident(d, self.score_threshold) for d in model(list(inputs))]

    def per_sample_dot(self, model, x, y, scope, s, method: str) -> torch.Tensor | None:
        """The heads' fast path (see :mod:`.gradients`); ``None`` (generic path) for ``loop`` or other scopes."""
        if method == "loop" or not isinstance(model, Detector):
            return None
        return per_image_dot(model, list(x), list(y), scope, s)

    @torch.no_grad()
    def features(self, model: Detector, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Global-average-pooled head features (core-set's embedding)."""
        return model.head_features(list(inputs))

    # ------------------------------------------------------------------ predictions and metrics
    @torch.no_grad()
    def detect(self, model: Detector, dataset, ids: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Post-NMS detections (on the CPU) for every id, in order."""
        out = []
        for _, images, _ in self.batches(dataset, ids, self.batch_size):
            out.extend({k: v.cpu() for k, v in d.items()} for d in model.detect(images))
        return out

    def evaluate(self, model: Detector, dataset, ids: Sequence[int] | None = None) -> dict[str, float]:
        ids = np.arange(len(dataset)) if ids is None else np.asarray(ids, dtype=np.int64)
        detections = self.detect(model, dataset, ids)
        return coco_ap(dataset.coco_subset(ids), coco_results(dataset, ids, detections))

    def cost(self, dataset, ids: Sequence[int]) -> float:
        return float(dataset.num_boxes(ids))

    # ------------------------------------------------------------------ training
    def train(self, model: Detector, dataset, ids: Sequence[int], cfg, generator: torch.Generator, *,
              progress: bool = False, loss_fn=None) -> Detector:
        """SGD on ``ids`` for ``cfg.epochs`` (a :class:`~influal.config.TrainConfig`); returns the model in eval mode,
        frozen except for the heads' final layers."""
        if loss_fn is not None:
            raise ConfigError("detection training takes no custom loss function")
        if cfg.augment != "none":
            raise ConfigError(f"detection supports train.augment 'none' only (got {cfg.augment!r}); flips would turn "
                              "some digits into others")
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            raise ConfigError("cannot train on an empty labeled set")
        model.restore_trainable()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                    nesterov=cfg.nesterov and cfg.momentum > 0)
        step = 0
        drop_last = cfg.drop_last and len(ids) >= cfg.batch_size
        for epoch in progress_bar(range(cfg.epochs), total=cfg.epochs, desc="training", enabled=progress):
            epoch_lr = cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if m <= epoch)
            for _, images, targets in self.batches(dataset, ids, cfg.batch_size, shuffle=True, generator=generator,
                                                   drop_last=drop_last):
                for group in optimizer.param_groups:
                    group["lr"] = epoch_lr / 3.0 if step < self.warmup_iters else epoch_lr
                loss = sum(model.train_losses(images, targets).values())
                if not math.isfinite(float(loss.detach())):
                    raise TrainingDiverged(f"the detector's training loss became {float(loss.detach())} at epoch {epoch}; "
                                           "lower --lr or raise the warm-up")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                optimizer.step()
                step += 1
        model.eval()
        return model.freeze_for_influence()


def keep_confident(detection: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """Detections with score >= ``threshold`` as a target dict (boxes, labels, scores)."""
    keep = detection["scores"] >= threshold
    return {"boxes": detection["boxes"][keep].detach(), "labels": detection["labels"][keep].detach(),
            "scores": detection["scores"][keep].detach()}


def coco_results(dataset, ids: Sequence[int], detections: list[dict[str, Any]]) -> list[dict]:
    """Detections as COCO result entries (xywh boxes, the data set's image and category ids)."""
    out = []
    for i, det in zip(ids, detections):
        image_id = dataset.image_id(int(i))
        boxes = xyxy_to_xywh(det["boxes"]).tolist()
        for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist()):
            if 1 <= label <= len(dataset.category_ids):
                out.append({"image_id": image_id, "category_id": dataset.category_ids[label - 1],
                            "bbox": [round(v, 3) for v in box], "score": float(score)})
    return out
