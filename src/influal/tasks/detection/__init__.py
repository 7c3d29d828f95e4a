"""Object detection: ISAL and its baselines for torchvision FCOS and Faster R-CNN (see docs/detection.md).

This folder holds the task (:class:`DetectionTask`), its influence hooks (one-backward head gradients), the
detector families (``families/``: one file each), backbones, data-set formats (``datasets/``: digit canvas, COCO,
VOC), metrics (COCO AP), its strategies (localization stability, learning loss on FPN features), its settings
block and its report section. Importing it registers the plug-in and the strategies.
"""

from ...strategies import STRATEGIES
from .. import register_task
from .datasets import DATASETS, CanvasSpec, CocoDetectionDataset, write_digit_canvas
from .families import FAMILIES
from .metrics import coco_ap
from .models import Detector, LossInputs, build_detector
from .plugin import PLUGIN, DetectionPlugin
from .settings import DetectionSettings
from .strategies import DETECTION_STRATEGIES
from .task import DetectionTask

register_task(PLUGIN)
for _name, _cls in DETECTION_STRATEGIES.items():
    STRATEGIES.register(_name, _cls)

__all__ = ["DATASETS", "FAMILIES", "PLUGIN", "CanvasSpec", "CocoDetectionDataset", "DetectionPlugin",
           "DetectionSettings", "DetectionTask", "Detector", "LossInputs", "build_detector", "coco_ap",
           "write_digit_canvas"]
