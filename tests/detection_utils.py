"""Shared helpers of the detection tests: tiny canvases, tiny detectors, one CPU thread."""

from __future__ import annotations

import contextlib

import torch

from influal.tasks.detection.datasets.canvas import CanvasSpec, write_digit_canvas
from influal.tasks.detection.datasets.coco import CocoDetectionDataset
from influal.tasks.detection.models import build_detector

SIZE = 48
SPEC = CanvasSpec(pool=12, val=4, test=6, image_size=SIZE, min_scale=12, max_scale=18, seed=3)


@contextlib.contextmanager
def one_thread():
    """Small convolutions run far faster on one thread than on two oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def canvas(root, spec: CanvasSpec = SPEC) -> dict[str, CocoDetectionDataset]:
    root = write_digit_canvas(root, spec)
    return {s: CocoDetectionDataset.from_json(root / f"{s}.json") for s in ("pool", "val", "test")}


def detector(kind: str = "fcos", seed: int = 0, num_classes: int = 10):
    torch.manual_seed(seed)
    return build_detector(kind, num_classes, min_size=SIZE)
