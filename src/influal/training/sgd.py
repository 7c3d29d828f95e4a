"""The one SGD training loop: train from scratch on the labeled set with a seeded recipe, for any task.

The recipe (:class:`~influal.settings.TrainConfig`) gives epochs, rate, momentum, weight decay, milestones,
a constant warm-up and gradient clipping. The task supplies the batches and the objective
(``task.training_loss``, or the strategy's ``loss_fn`` where the task has a loss hook), and may prepare each
batch (augmentation) and skip batches too small to train on (a lone sample breaks BatchNorm).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, TrainingDiverged
from ..core.faults import fault_point
from ..core.progress import progress_bar
from ..settings import TrainConfig

LossHook = Callable[[nn.Module, Any, Any, int], torch.Tensor]
Objective = Callable[[nn.Module, Any, Any, int], torch.Tensor]


def train_sgd(model: nn.Module, task, dataset, ids: Sequence[int], cfg: TrainConfig, generator: torch.Generator,
              *, objective: Objective, prepare: Callable[[Any, torch.Generator], Any] | None = None,
              min_batch: int = 1, progress: bool = False) -> nn.Module:
    """``cfg.epochs`` of SGD over ``ids`` (reshuffled every epoch from ``generator``) on the trainable parameters.

    ``objective(model, inputs, targets, epoch)`` is the scalar loss of a batch; ``prepare(inputs, generator)``
    transforms a batch first (augmentation); batches with fewer than ``min_batch`` items are skipped (they are
    seen again next epoch). A non-finite loss raises :class:`~influal.core.errors.TrainingDiverged`.
    Returns the model in eval mode.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise ConfigError("cannot train on an empty labeled set")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov and cfg.momentum > 0)
    model.train()
    drop_last = cfg.drop_last and len(ids) >= cfg.batch_size
    step = 0
    for epoch in progress_bar(range(cfg.epochs), total=cfg.epochs, desc="training", enabled=progress):
        fault_point("training")
        epoch_lr = cfg.lr_at(epoch)
        for _, x, y in task.batches(dataset, ids, cfg.batch_size, shuffle=True, generator=generator,
                                    drop_last=drop_last):
            if len(y) < min_batch:
                continue
            if prepare is not None:
                x = prepare(x, generator)
            lr = epoch_lr / cfg.warmup_divisor if step < cfg.warmup_iters else epoch_lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = objective(model, x, y, epoch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"the training loss became {value} at epoch {epoch}; lower --lr"
                                       + (" or raise the warm-up" if cfg.warmup_iters else ""))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            step += 1
    model.eval()
    return model
