"""Classifiers, found by name in :data:`MODELS` (``--model``): builder(config, splits) -> a fresh nn.Module.

Any ``nn.Module`` that maps images to logits works through the Python API (``model_factory=``); register your own
with ``MODELS.register("mine", lambda config, splits: MyNet(splits.num_classes))``.
"""

from __future__ import annotations

from torch import nn

from ....core.registry import Registry
from .cnn import SmallCNN
from .resnet import ResNet18

MODELS: Registry = Registry("classification model", entry_point_group="influal.classification_models")


def build_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build a fresh, randomly initialised classifier (seed torch before calling for a reproducible init)."""
    return MODELS.get(name)(None, InputShape(num_classes, in_channels, image_size))


class InputShape:
    """What the builders read of a data set's splits: classes, channels, image size."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size


MODELS.register("cnn", lambda config, splits: SmallCNN(splits.num_classes, splits.in_channels))
MODELS.register("resnet18", lambda config, splits: ResNet18(splits.num_classes, splits.in_channels, maxpool=False))
MODELS.register("resnet18-maxpool", lambda config, splits: ResNet18(splits.num_classes, splits.in_channels,
                                                                    maxpool=True))
MODELS.register("linear", lambda config, splits: nn.Sequential(
    nn.Flatten(), nn.Linear(splits.in_channels * splits.image_size ** 2, splits.num_classes)))

__all__ = ["MODELS", "InputShape", "ResNet18", "SmallCNN", "build_model"]
