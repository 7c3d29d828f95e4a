"""The one SGD training loop: train from scratch on the labeled set with a seeded recipe, for any task.

The recipe (:class:`~influal.settings.TrainConfig`) gives epochs, rate, momentum, weight decay, milestones,
a constant warm-up and gradient clipping. The task supplies the batches and the objective
(``task.training_loss``, or the strategy's ``loss_fn`` where the task has a loss hook), and may prepare each
batch (augmentation) and skip batches too small to train on (a lone sample breaks BatchNorm).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core import dist
from ..core.errors import ConfigError, TrainingDiverged
from ..core.faults import fault_point
from ..core.progress import progress_bar
from ..settings import TrainConfig
from .data_parallel import chunk, global_batch_norm, sum_gradients, take

LossHook = Callable[[nn.Module, Any, Any, int], torch.Tensor]
Objective = Callable[[nn.Module, Any, Any, int], torch.Tensor]


def train_sgd(model: nn.Module, task, dataset, ids: Sequence[int], cfg: TrainConfig, generator: torch.Generator,
              *, objective: Objective, prepare: Callable[[Any, torch.Generator], Any] | None = None,
              min_batch: int = 1, progress: bool = False, data_parallel: bool = True) -> nn.Module:
    """``cfg.epochs`` of SGD over ``ids`` (reshuffled every epoch from ``generator``) on the trainable parameters.

    ``objective(model, inputs, targets, epoch)`` is the scalar loss of a batch; ``prepare(inputs, generator)``
    transforms a batch first (augmentation); batches with fewer than ``min_batch`` items are skipped (they are
    seen again next epoch). A non-finite loss raises :class:`~influal.core.errors.TrainingDiverged`.
    Returns the model in eval mode.

    Under torch.distributed the ranks train data-parallel and like one process with the same batch size
    (:mod:`influal.training.data_parallel`): every rank draws the same batches and augmentation, keeps its share of
    each batch, and the gradients are summed over the ranks before the (identical) step; BatchNorm statistics are
    those of the whole batch. Batches with fewer items than ranks are skipped there. That is exact where a batch's
    objective is the mean of per-item terms; where it is not (``data_parallel=False``: detection's losses are
    normalised by the batch's positive locations, learning loss pairs the items of a batch), every rank trains on
    the whole batches instead, the same model as one process, without the speed-up.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise ConfigError("cannot train on an empty labeled set")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov and cfg.momentum > 0)
    model.train()
    drop_last = cfg.drop_last and len(ids) >= cfg.batch_size
    parallel = dist.active() and data_parallel
    smallest = max(min_batch, dist.world_size()) if parallel else min_batch
    step = 0
    with global_batch_norm(model) if parallel else contextlib.nullcontext():
        for epoch in progress_bar(range(cfg.epochs), total=cfg.epochs, desc="training", enabled=progress):
            fault_point("training")
            epoch_lr = cfg.lr_at(epoch)
            for _, x, y in task.batches(dataset, ids, cfg.batch_size, shuffle=True, generator=generator,
                                        drop_last=drop_last):
                if len(y) < smallest:
                    continue
                if prepare is not None:
                    x = prepare(x, generator)
                lr = epoch_lr / cfg.warmup_divisor if step < cfg.warmup_iters else epoch_lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if parallel:  # this rank's share of the batch mean
                    part = chunk(len(y))
                    loss = objective(model, take(x, part), take(y, part), epoch) * ((part.stop - part.start) / len(y))
                    value = float(dist.all_sum(loss.detach()))
                else:
                    loss = objective(model, x, y, epoch)
                    value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(f"the training loss became {value} at epoch {epoch}; lower --lr"
                                           + (" or raise the warm-up" if cfg.warmup_iters else ""))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if parallel:
                    sum_gradients(params)
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                step += 1
    model.eval()
    return model
