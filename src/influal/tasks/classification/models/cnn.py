"""A small convolutional classifier that trains fast on CPU."""

from __future__ import annotations

import torch
from torch import nn


class PoolTo(nn.AdaptiveAvgPool2d):
    """Adaptive average pooling that passes through an input already of the output size (the mean of one value
    is that value): 28-px digits reach the pool at 7x7, where the kernel would only cost time, mostly in the
    backward of influence scoring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size, self.output_size)
        if tuple(x.shape[-2:]) == size:
            return x
        return super().forward(x)


class SmallCNN(nn.Module):
    """conv-BN-ReLU-pool x2, then fc(hidden)-ReLU-linear. Works on any square input >= 4 px.

    ``features`` and ``embed`` produce the penultimate representation; ``linear`` is the output layer.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, hidden: int = 128):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width),
                                      PoolTo(7), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(2 * width * 49, hidden), nn.ReLU(inplace=True))
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.embed(self.features(x)))
