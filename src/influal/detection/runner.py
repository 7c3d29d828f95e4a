"""What the active-learning loop needs to run a detection experiment: splits, task, model factory.

Data sets (``config.dataset``):
- ``digit-canvas``: generated offline (see :mod:`.canvas`) into ``--data-root`` or, by default, under
  ``$INFLUAL_DATA`` (``~/.cache/influal``) in a folder named after its settings. Pool size from
  ``detection.pool_size``, reference (validation) and test sizes from ``val_size`` / ``test_size``
  (defaults 200 / 300).
- ``coco``: ``--data-root`` holds ``train.json`` (the pool), ``test.json`` and optionally ``val.json`` (the
  reference set), with image ``file_name`` relative to that folder.
- ``voc``: ``--data-root`` is a ``VOC2012``-style folder; the pool is the ``train`` image set and the test set
  the ``val`` one.

Where no reference file exists, ``val_size`` images (default 10 % of the pool, at most 500) are held out of
the pool by a seeded permutation: the reference set is never the test set (the official code used its test
set, spec §9.2). Pool images without any box are dropped, as the official code does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.base import DatasetSplits
from ..errors import ConfigError
from .canvas import CanvasSpec, write_digit_canvas
from .coco import CocoDetectionDataset
from .models import Detector, build_detector
from .strategies import DETECTION_STRATEGIES, TASK_AGNOSTIC
from .task import DetectionTask

DETECTION_DATASETS = ("digit-canvas", "coco", "voc")
SPLIT_SEED = 0


def default_data_root() -> Path:
    return Path(os.environ.get("INFLUAL_DATA", Path.home() / ".cache" / "influal"))


def canvas_spec(config) -> CanvasSpec:
    det = config.detection
    return CanvasSpec(pool=det.pool_size, val=config.val_size or 200, test=config.test_size or 300,
                      image_size=det.image_size, min_digits=det.min_digits, max_digits=det.max_digits,
                      min_scale=max(8, det.image_size // 8 + 4), max_scale=max(8, det.image_size * 11 // 32))


def _hold_out(pool: CocoDetectionDataset, size: int | None) -> tuple[CocoDetectionDataset, CocoDetectionDataset]:
    size = size if size is not None else max(1, min(500, len(pool) // 10))
    if size >= len(pool):
        raise ConfigError(f"val_size {size} leaves no pool images out of {len(pool)}; lower --val-size")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    return pool.subset(np.sort(order[size:]), name="pool"), pool.subset(np.sort(order[:size]), name="val")


def load_detection_splits(config) -> DatasetSplits:
    name, root = config.dataset, config.data_root
    det = config.detection
    if name == "digit-canvas":
        spec = canvas_spec(config)
        if root is None:
            root = default_data_root() / (f"digit-canvas-{spec.image_size}px-{spec.pool}-{spec.val}-{spec.test}-"
                                          f"{spec.min_digits}to{spec.max_digits}")
        root = write_digit_canvas(root, spec)
        pool, val, test = (CocoDetectionDataset.from_json(Path(root) / f"{s}.json", name=s) for s in
                           ("pool", "val", "test"))
    elif name in ("coco", "voc"):
        if root is None:
            raise ConfigError(f"dataset {name!r} needs --data-root (a local folder; nothing is downloaded)")
        root = Path(root)
        if name == "coco":
            pool = CocoDetectionDataset.from_json(root / "train.json", name="pool", cache=False)
            test = CocoDetectionDataset.from_json(root / "test.json", name="test", cache=False,
                                                  category_ids=pool.category_ids)
            val = CocoDetectionDataset.from_json(root / "val.json", name="val", cache=False,
                                                 category_ids=pool.category_ids) if (root / "val.json").exists() \
                else None
        else:
            from .voc import load_voc

            pool, test, val = load_voc(root, "train", cache=False), load_voc(root, "val", cache=False), None
        pool = pool.subset(pool.with_boxes(), name="pool")
        if val is None:
            pool, val = _hold_out(pool, config.val_size)
        if config.test_size is not None and config.test_size < len(test):
            test = test.subset(np.arange(config.test_size), name="test")
    else:
        raise ConfigError(f"unknown detection dataset {name!r}; choose one of {', '.join(DETECTION_DATASETS)}")
    size = det.image_size if name == "digit-canvas" else det.min_size or det.image_size
    return DatasetSplits(name, pool=pool, val=val, test=test, num_classes=pool.num_classes, in_channels=3,
                         image_size=size)


def check_detection_config(config) -> None:
    """Everything about a detection experiment that can be checked before loading data."""
    det = config.detection
    supported = set(TASK_AGNOSTIC) | set(DETECTION_STRATEGIES)
    for name in config.strategies:
        if name not in supported:
            raise ConfigError(f"strategy {name!r} does not support object detection; choose from "
                              f"{', '.join(sorted(supported))}")
    if config.influence.scope == "last":
        raise ConfigError("influence scope 'last' means a final nn.Linear, which detectors lack; use 'weights' (the "
                          "heads' final-layer weights, as the paper) or 'all' (with their biases)")
    if config.train.augment != "none":
        raise ConfigError(f"detection training supports --augment none only (got {config.train.augment!r})")
    if config.dataset not in DETECTION_DATASETS:
        raise ConfigError(f"dataset {config.dataset!r} is not a detection dataset; choose one of "
                          f"{', '.join(DETECTION_DATASETS)}")
    if det.weights is not None and not Path(det.weights).exists():
        raise ConfigError(f"weights file {det.weights} does not exist; give a local path (nothing is downloaded)")


def detection_model_factory(config, splits: DatasetSplits) -> Callable[[], Detector]:
    det = config.detection
    min_size = det.min_size or splits.image_size
    max_size = det.max_size or min_size

    def factory() -> Detector:
        return build_detector(det.detector, splits.num_classes, backbone=det.backbone, weights=det.weights,
                              min_size=min_size, max_size=max_size)

    return factory


def prepare_detection(config, device: torch.device, *, splits: DatasetSplits | None = None,
                      model_factory: Callable[[], torch.nn.Module] | None = None):
    """``(splits, task, model_factory)`` for a detection :class:`~influal.config.ExperimentConfig`."""
    check_detection_config(config)
    if splits is None:
        splits = load_detection_splits(config)
    det = config.detection
    task = DetectionTask(splits.num_classes, device, batch_size=det.batch_size,
                         score_threshold=det.score_threshold, grad_clip=det.grad_clip,
                         warmup_iters=det.warmup_iters)
    if model_factory is None:
        model_factory = detection_model_factory(config, splits)
    return splits, task, model_factory
