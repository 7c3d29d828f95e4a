"""Hessian-vector products of the mean training loss over the labeled set, restricted to a parameter scope."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core import dist
from .params import ParamScope


def basis_blocks(p: int, chunk: int, like: torch.Tensor):
    """``(start, stop, E)`` for consecutive blocks of the identity [p, p]: ``E`` holds rows ``start..stop`` (unit
    vectors, ``like``'s dtype and device), the directions a dense Hessian is built from ``chunk`` at a time."""
    for start in range(0, p, chunk):
        stop = min(start + chunk, p)
        basis = torch.zeros(stop - start, p, dtype=like.dtype, device=like.device)
        basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        yield start, stop, basis


class HessianOperator:
    """``H`` = Hessian of the mean loss over ``ids`` (true labels) w.r.t. a scope, used only through products.

    The model must be in eval mode (BatchNorm frozen) so that samples are independent.
    """

    def __init__(self, model: nn.Module, task, dataset, ids: Sequence[int], scope: ParamScope, batch_size: int = 256):
        self.model, self.task, self.dataset, self.scope = model, task, dataset, scope
        self.ids = np.asarray(ids, dtype=np.int64)
        self.batch_size = batch_size
        self.n = len(self.ids)
        self.num_products = 0

    def _batch_hvp(self, vec: torch.Tensor, inputs, targets) -> torch.Tensor:
        """H_B v for the mean loss of one batch, by double backward."""
        loss = self.task.loss(self.model, inputs, targets).mean()
        grad = self.scope.grad(loss, create_graph=True)
        hv = torch.autograd.grad(grad @ vec, self.scope.params, allow_unused=True)
        self.num_products += 1
        return self.scope.flatten([torch.zeros_like(p) if h is None else h for h, p in zip(hv, self.scope.params)])

    def full(self, vec: torch.Tensor) -> torch.Tensor:
        """H v over the whole labeled set (a weighted sum of batch products)."""
        out = torch.zeros_like(vec)
        for batch_ids, x, y in self.task.batches(self.dataset, self.ids, self.batch_size):
            out += self._batch_hvp(vec, x, y).detach() * (len(batch_ids) / self.n)
        return out

    def skip_sample(self, generator: torch.Generator, batch_size: int) -> None:
        """Advance ``generator`` as :meth:`sample` does, without the product (a LiSSA chain another rank runs)."""
        torch.randperm(self.n, generator=generator)

    def sample(self, vec: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """H_B v on a mini-batch of ``batch_size`` labeled items drawn at random (without replacement)."""
        pick = torch.randperm(self.n, generator=generator)[:batch_size].numpy()
        _, x, y = next(iter(self.task.batches(self.dataset, self.ids[pick], batch_size)))
        return self._batch_hvp(vec, x, y).detach()

    def dense(self, chunk: int = 64) -> torch.Tensor:
        """The explicit Hessian [p, p], built column-block by column-block with batched products.

        Uses ``torch.func``: for each data batch, ``vmap`` over basis vectors of a forward-over-reverse product.
        Meant for small scopes (the exact solver); cost is about p / chunk passes over the labeled set.
        """
        from torch.func import functional_call, grad, jvp, vmap

        scope = self.scope
        base = {n: p.detach() for n, p in self.model.named_parameters()}
        buffers = dict(self.model.named_buffers())
        theta = scope.values()
        p = scope.numel
        H = torch.zeros(p, p, dtype=theta.dtype, device=theta.device)
        for batch_ids, x, y in self.task.batches(self.dataset, self.ids, self.batch_size):
            def batch_loss(flat: torch.Tensor) -> torch.Tensor:
                params = dict(base)
                params.update(scope.as_dict(flat))
                fn = lambda inp: functional_call(self.model, (params, buffers), (inp,))  # noqa: E731
                return self.task.loss(fn, x, y).mean()

            def hvp(tangent: torch.Tensor) -> torch.Tensor:
                return jvp(grad(batch_loss), (theta,), (tangent,))[1]

            weight = len(batch_ids) / self.n
            for start, stop, basis in basis_blocks(p, chunk, theta):
                H[start:stop] += vmap(hvp)(basis).detach() * weight
        self.num_products += p
        return 0.5 * (H + H.T)


class ShardedHessian:
    """The Hessian of the mean loss over a labeled set split between torch.distributed ranks: each rank's operator
    covers its ``n_local`` of the ``n_total`` items; full products and the dense matrix are their weighted sum
    over the ranks (``n_local / n_total`` each), the same on every rank. Mini-batch products (LiSSA) are not
    offered: those run on the whole labeled set (:meth:`InfluenceEngine.solve`)."""

    def __init__(self, local, n_local: int, n_total: int):
        self.local, self.weight = local, n_local / max(n_total, 1)
        self.n = n_total

    def full(self, vec: torch.Tensor) -> torch.Tensor:
        part = self.local.full(vec) * self.weight if self.weight else torch.zeros_like(vec)
        return dist.all_sum(part)

    def dense(self, chunk: int = 64) -> torch.Tensor:
        return dist.all_sum(self.local.dense(chunk) * self.weight)

    def sample(self, vec: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        raise NotImplementedError("mini-batch Hessian products run on the whole labeled set, not on a rank's shard")
