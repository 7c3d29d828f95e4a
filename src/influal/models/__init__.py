"""Model builders for classification."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .cnn import SmallCNN
from .introspect import forward_with_features, last_linear
from .resnet import ResNet18

CLASSIFIERS = ("cnn", "resnet18", "resnet18-maxpool", "linear")


def build_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build a fresh, randomly initialised classifier (seed torch before calling for a reproducible init)."""
    if name == "cnn":
        return SmallCNN(num_classes, in_channels)
    if name == "resnet18":
        return ResNet18(num_classes, in_channels, maxpool=False)
    if name == "resnet18-maxpool":
        return ResNet18(num_classes, in_channels, maxpool=True)
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(CLASSIFIERS)}")


__all__ = ["CLASSIFIERS", "ResNet18", "SmallCNN", "build_model", "forward_with_features", "last_linear"]
