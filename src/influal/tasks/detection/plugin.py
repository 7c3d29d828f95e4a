"""The detection task plug-in: what the loop, the CLI and the report need from this folder."""

from __future__ import annotations

from pathlib import Path

from ...api import DatasetSplits, TaskPlugin
from ...core.errors import ConfigError
from .datasets import DATASETS
from .families import FAMILIES
from .models import build_detector
from .report import box_report_markdown
from .settings import DetectionSettings
from .task import DetectionTask


def _build(config, splits: DatasetSplits):
    det = config.task_settings
    min_size = det.min_size or splits.image_size
    return build_detector(config.model, splits.num_classes, backbone=det.backbone, weights=det.weights,
                          min_size=min_size, max_size=det.max_size or min_size)


class DetectionPlugin(TaskPlugin):
    name = "detection"
    settings_class = DetectionSettings
    metric = "AP"
    cost_unit = "boxes"
    metric_scale = 1.0
    default_dataset = "digit-canvas"
    default_model = "fcos"
    task_class = DetectionTask
    default_train_preset = "detection"

    def datasets(self):
        return DATASETS

    def models(self):
        return FAMILIES

    def model_factory(self, config, splits: DatasetSplits):
        return lambda: _build(config, splits)

    def check(self, config) -> None:
        super().check(config)
        if config.train.augment != "none":
            raise ConfigError(f"detection training supports --augment none only (got {config.train.augment!r})")
        weights = config.task_settings.weights
        if weights is not None and not Path(weights).exists():
            raise ConfigError(f"weights file {weights} does not exist; give a local path (nothing is downloaded)")

    def labeling(self):
        from .labeling import DetectionLabels

        return DetectionLabels()

    def build_task(self, config, splits: DatasetSplits, device) -> DetectionTask:
        det = config.task_settings
        return DetectionTask(splits.num_classes, device, batch_size=det.batch_size,
                             score_threshold=det.score_threshold)

    def report_sections(self, rows: list[dict], metric: str, baseline: str) -> str:
        return box_report_markdown(rows, metric, baseline)


PLUGIN = DetectionPlugin()
