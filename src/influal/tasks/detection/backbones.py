"""Backbones the detector families share: the tiny CPU backbone and torchvision's ResNet-50-FPN.

- ``tiny``: a five-conv GroupNorm CNN with a three-level FPN (strides 4, 8, 16; 32 channels). It trains on
  CPU in seconds on 128 px images and is what tests and the offline demo use.
- ``resnet50-fpn``: torchvision's public ``resnet_fpn_backbone`` (weights only from a local file, see
  :func:`influal.tasks.detection.models.load_weights`). With weights, BatchNorm is frozen and only the last
  ``trainable_layers`` stages train, as torchvision's builders do.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

BACKBONES = ("tiny", "resnet50-fpn")


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout),
                         nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Conv stem and three stages (strides 4, 8, 16) with an FPN on top; ``out_channels`` per level."""

    strides = (4, 8, 16)

    def __init__(self, width: int = 16, out_channels: int = 32, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(_conv_block(in_channels, width, 2), _conv_block(width, width, 1))
        self.stage1 = _conv_block(width, 2 * width, 2)
        self.stage2 = _conv_block(2 * width, 2 * width, 2)
        self.stage3 = _conv_block(2 * width, 4 * width, 2)
        self.fpn = FeaturePyramidNetwork([2 * width, 2 * width, 4 * width], out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        c1 = self.stage1(self.stem(x))
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return self.fpn(OrderedDict([("0", c1), ("1", c2), ("2", c3)]))


def resnet50_fpn(*, pretrained: bool, trainable_layers: int, returned_layers: list[int] | None = None,
                 extra_blocks=None) -> nn.Module:
    """torchvision's ResNet-50-FPN, randomly initialised (weights are loaded afterwards from a local file)."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import misc as misc_nn_ops

    norm = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    return resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=norm,
                               trainable_layers=trainable_layers if pretrained else 5,
                               returned_layers=returned_layers, extra_blocks=extra_blocks)
