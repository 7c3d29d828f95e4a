"""Train a model from scratch on the labeled set with a seeded SGD recipe."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .augment import augment
from .config import TrainConfig
from .errors import ConfigError
from .progress import progress_bar

LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    return optimizer, scheduler


def train_classifier(model: nn.Module, task, dataset, ids: Sequence[int], cfg: TrainConfig, generator: torch.Generator,
                     *, progress: bool = False, loss_fn: LossHook | None = None) -> nn.Module:
    """Plain supervised training: ``cfg.epochs`` of SGD over ``ids`` with per-epoch shuffles from ``generator``.

    ``loss_fn(model, x, y, epoch)`` may replace the mean cross-entropy (learning loss adds its own term).
    Returns the model in eval mode.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise ConfigError("cannot train on an empty labeled set")
    optimizer, scheduler = make_optimizer(model, cfg)
    model.train()
    drop_last = cfg.drop_last and len(ids) >= cfg.batch_size
    for epoch in progress_bar(range(cfg.epochs), total=cfg.epochs, desc="training", enabled=progress):
        for _, x, y in task.batches(dataset, ids, cfg.batch_size, shuffle=True, generator=generator,
                                    drop_last=drop_last):
            if len(y) < 2:  # a lone leftover sample would break BatchNorm; it is seen again next epoch
                continue
            x = augment(x, cfg.augment, generator)
            if loss_fn is None:
                loss = task.loss(model, x, y).mean()
            else:
                loss = loss_fn(model, x, y, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    return model
