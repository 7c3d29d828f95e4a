"""Data-parallel training over torch.distributed ranks that trains like one process.

One process with global batch B and N ranks see the same batches: every rank draws the same shuffled order and the
same augmentation of the whole batch from the shared seeded generator, then keeps its contiguous share of the
batch's items (:func:`chunk`). Each rank's loss is its share of the batch mean (its items' mean times its share of
the batch), the gradients are summed over the ranks after the backward pass (what DistributedDataParallel does,
here without its wrapper, so that objectives that are not the model's ``forward`` — detection's training losses, a
strategy's loss hook — are synchronised the same way), and every rank then takes the same optimiser step.

BatchNorm layers are made global for the training (:func:`global_batch_norm`): a batch's mean and variance are
summed over the ranks (with gradients flowing through the sum), so the statistics are those of the whole batch as
in one process, and the running estimates match too. torch's SyncBatchNorm does this on GPUs only; this works on
any backend.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..core import dist


def chunk(n: int) -> slice:
    """This rank's contiguous share of a batch of ``n`` items (``np.array_split`` order)."""
    if not dist.active():
        return slice(0, n)
    sizes = [len(p) for p in np.array_split(np.arange(n), dist.world_size())]
    start = sum(sizes[:dist.rank()])
    return slice(start, start + sizes[dist.rank()])


def take(batch, part: slice):
    """``part`` of a batch's inputs or targets: a tensor's rows, or a list's items (detection)."""
    if isinstance(batch, torch.Tensor):
        return batch[part]
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch[part])
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} between ranks")


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks, in one flat all-reduce."""
    if not dist.active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = dist.all_sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(g.dtype)
        offset += n


class _AllSum(torch.autograd.Function):
    """y = Σ_ranks x, with the gradient of the summed objective of all ranks: dL/dx = Σ_ranks dL_r/dy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return dist.all_sum(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return dist.all_sum(grad)


class _GlobalBatchNorm(nn.Module):
    """A BatchNorm layer whose training statistics are those of the batch over every rank."""

    def __init__(self, inner: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.inner
        if not (bn.training and dist.active()):
            return bn(x)
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([float(x.numel() // x.shape[1])], dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        total = _AllSum.apply(local)
        c = x.shape[1]
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if bn.track_running_stats:
            with torch.no_grad():
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked + 1)
                bn.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                bn.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / (n - 1).clamp_min(1.0))
                bn.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
        if bn.affine:
            out = out * bn.weight.view(shape) + bn.bias.view(shape)
        return out


@contextmanager
def global_batch_norm(model: nn.Module) -> Iterator[nn.Module]:
    """While the block runs (several ranks only), every BatchNorm layer of ``model`` normalises with the statistics
    of the whole batch over the ranks; the layers are put back afterwards (parameters and buffers are the same
    objects, so nothing is copied)."""
    if not dist.active():
        yield model
        return
    swapped = [(parent, name, child) for parent in list(model.modules())
               for name, child in parent.named_children() if isinstance(child, nn.modules.batchnorm._BatchNorm)]
    for parent, name, child in swapped:
        setattr(parent, name, _GlobalBatchNorm(child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
