"""Shared fixtures: tiny, deterministic datasets and models that make the tests fast."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from influal.api import DatasetSplits
from influal.tasks.classification import TensorImageDataset

os.environ.setdefault("INFLUAL_QUIET", "1")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and immune to oversubscription


def blobs(n: int, num_classes: int = 3, size: int = 6, channels: int = 1, seed: int = 0,
          noise: float = 60.0) -> TensorImageDataset:
    """Class-dependent mean images plus noise, stored as uint8 like real images."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(num_classes, channels, size, size, generator=g) * 160 + 40
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    images = centers[labels] + noise * torch.randn(n, channels, size, size, generator=g)
    images = images.clamp(0, 255).round().to(torch.uint8)
    return TensorImageDataset(images, labels, [128.0] * channels, [64.0] * channels)


def blob_splits(pool: int = 120, val: int = 40, test: int = 60, num_classes: int = 3, size: int = 6,
                seed: int = 0) -> DatasetSplits:
    full = blobs(pool + val + test, num_classes, size, seed=seed)
    ids = np.arange(len(full))
    return DatasetSplits("blobs", pool=full.subset(ids[:pool]), val=full.subset(ids[pool:pool + val]),
                         test=full.subset(ids[pool + val:]), num_classes=num_classes, in_channels=1, image_size=size)


def trained_blob_classifier(pool: int, labeled: int, seed: int, val: int = 20):
    """(task, small CNN trained 3 epochs on the first ``labeled`` pool items, in eval mode, splits) on 8x8 blobs."""
    from influal.settings import TrainConfig
    from influal.tasks.classification import ClassificationTask, SmallCNN

    torch.manual_seed(0)
    splits = blob_splits(pool=pool, val=val, test=4, size=8, seed=seed)
    task = ClassificationTask(3, eval_batch_size=16)
    model = SmallCNN(3, 1, width=4, hidden=6)
    task.train(model, splits.pool, np.arange(labeled), TrainConfig(epochs=3, lr=0.05, batch_size=8, milestones=()),
               torch.Generator().manual_seed(0))
    return task, model.eval(), splits


def linear_model(size: int = 6, num_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, num_classes))


def mlp_model(size: int = 6, num_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 8), nn.Tanh(), nn.Linear(8, num_classes))


@pytest.fixture
def splits() -> DatasetSplits:
    return blob_splits()
