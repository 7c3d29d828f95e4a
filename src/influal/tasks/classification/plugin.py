"""The classification task plug-in: what the loop, the CLI and the report need from this folder."""

from __future__ import annotations

from ...api import DatasetSplits, TaskPlugin
from .datasets import DATASETS
from .models import MODELS
from .settings import ClassificationSettings
from .task import ClassificationTask


class ClassificationPlugin(TaskPlugin):
    name = "classification"
    settings_class = ClassificationSettings
    metric = "accuracy"
    cost_unit = "labels"
    metric_scale = 100.0
    default_dataset = "mnist5k"
    default_model = "cnn"
    default_train_preset = "demo"

    def datasets(self):
        return DATASETS

    def models(self):
        return MODELS

    def build_task(self, config, splits: DatasetSplits, device) -> ClassificationTask:
        settings = config.task_settings
        return ClassificationTask(splits.num_classes, device, config.eval_batch_size,
                                  label_smoothing=settings.label_smoothing)


PLUGIN = ClassificationPlugin()
