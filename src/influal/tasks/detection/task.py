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
- ``train`` fits a fresh detector with the shared SGD loop (:func:`influal.training.train_sgd`: momentum,
  weight decay, step decay per epoch, a constant warm-up at 1/3 of the rate for ``train.warmup_iters`` steps and
  gradient-norm clipping, as mmdetection's FCOS recipe), then freezes everything but the heads' final layers,
  the parameters ISAL differentiates.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ...api import DETECTIONS, FEATURES, InfluenceHooks, Task
from ...core.batching import iterate_batches
from ...core.errors import ConfigError, DataError
from ...core.torch_utils import eval_mode, to_device
from ...training import train_sgd
from .boxes import xyxy_to_xywh
from .metrics import coco_ap
from .models import Detector, LossInputs


class DetectionTask(Task):
    metric_name = "AP"
    capabilities = frozenset({FEATURES, DETECTIONS})

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", batch_size: int = 16,
                 score_threshold: float = 0.1):
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {score_threshold}")
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.eval_batch_size = batch_size
        self.score_threshold = score_threshold

    # ------------------------------------------------------------------ data
    def batches(self, dataset, ids: Sequence[int], batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        for batch_ids, images, targets in iterate_batches(dataset, ids, batch_size, shuffle=shuffle,
                                                          generator=generator, drop_last=drop_last):
            yield batch_ids, to_device(list(images), self.device), to_device(list(targets), self.device)

    # ------------------------------------------------------------------ what the influence engine calls
    def loss(self, model, inputs: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        return model(LossInputs(list(inputs), list(targets)))

    @torch.no_grad()
    def pseudo_targets(self, model, inputs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if isinstance(model, Detector):  # post-process at the pseudo-box threshold: the same boxes, less NMS
            detections = model.detect(list(inputs), min_score=self.score_threshold)
        else:
            detections = model(list(inputs))
        return [keep_confident(d, self.score_threshold) for d in detections]

    def influence_hooks(self) -> InfluenceHooks:
        from .influence import DetectionInfluence

        return DetectionInfluence(self)

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

    @torch.no_grad()
    def predicted_costs(self, model: Detector, dataset, ids: Sequence[int]) -> np.ndarray:
        """Boxes an annotator is expected to draw: the detections at or above the pseudo-box threshold (at least
        one: an image costs a look even when nothing is predicted)."""
        with eval_mode(model):
            counts = [len(keep_confident(d, self.score_threshold)["boxes"]) for d in self.detect(model, dataset, ids)]
        return np.maximum(np.asarray(counts, dtype=np.float64), 1.0)

    def check_inputs(self, model: Detector, dataset, ids: Sequence[int]) -> None:
        """One image through the detector (detections and its training loss) to catch what does not fit early."""
        ids = np.asarray(ids, dtype=np.int64)[:1]
        if len(ids) == 0:
            return
        _, images, targets = next(self.batches(dataset, ids, 1))
        try:
            with torch.no_grad():
                model.detect(images)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"the detector cannot process an image of shape {tuple(images[0].shape)} ({first})") from None
        labels = targets[0]["labels"]
        if len(labels) and (int(labels.min()) < 1 or int(labels.max()) > self.num_classes):
            raise DataError(f"box labels must lie in 1..{self.num_classes}; found {int(labels.min())}..{int(labels.max())}")

    # ------------------------------------------------------------------ training
    def train(self, model: Detector, dataset, ids: Sequence[int], cfg, generator: torch.Generator, *,
              progress: bool = False, loss_fn=None) -> Detector:
        """SGD on ``ids`` (a :class:`~influal.settings.TrainConfig`); returns the model in eval mode, frozen
        except for the heads' final layers."""
        if loss_fn is not None:
            raise ConfigError("detection training takes no custom loss function")
        if cfg.augment != "none":
            raise ConfigError(f"detection supports train.augment 'none' only (got {cfg.augment!r}); flips would turn "
                              "some digits into others")
        model.restore_trainable()

        def objective(m, images, targets, epoch):
            return sum(m.train_losses(images, targets).values())

        # torchvision's detection losses are normalised by the batch's positive locations, not a mean over images: under
        # torch.distributed every rank trains on whole batches, the model of one process (see train_sgd)
        train_sgd(model, self, dataset, ids, cfg, generator, objective=objective, progress=progress,
                  data_parallel=False)
        return self.ready(model)

    def ready(self, model: Detector) -> Detector:
        """Eval mode, everything frozen but the heads' final layers (the parameters ISAL differentiates)."""
        return model.freeze_for_influence().eval()


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
