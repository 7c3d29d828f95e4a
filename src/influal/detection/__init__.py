"""Object detection: ISAL and its baselines for torchvision FCOS and Faster R-CNN (see docs/detection.md).

The loop reaches this package through :func:`influal.detection.runner.prepare_detection` when
``config.task == "detection"``; strategies ``random`` and ``isal`` are shared with classification.
"""

from .canvas import CanvasSpec, write_digit_canvas
from .coco import CocoDetectionDataset
from .metrics import coco_ap
from .models import BACKBONES, DETECTORS, Detector, LossInputs, build_detector
from .task import DetectionTask
from .voc import load_voc, voc_to_coco

__all__ = ["BACKBONES", "DETECTORS", "CanvasSpec", "CocoDetectionDataset", "DetectionTask", "Detector", "LossInputs",
           "build_detector", "coco_ap", "load_voc", "voc_to_coco", "write_digit_canvas"]
