"""Hessian products of a detector's mean labeled loss on the heads' final layers, from trunks computed once.

An image's loss depends on the final layers only through their pre-activations on the trunk's features (backbone,
FPN, towers, matching, proposal sampling: :mod:`.families.base`), and the trunk does not change while s_test is
solved. So the labeled set's trunks are computed once, one per image, and every Hessian product afterwards runs
only the final layers, the loss and a double backward through those: no pass through the backbone. Products on a
random mini-batch (LiSSA) join the drawn images' trunks; full products join them in batches.

Memory: the towers' features of every labeled image (tens of kB per 64-px canvas for the tiny backbone; tens of
MB per 800-px image for ResNet-50-FPN). Where the estimate passes :data:`CACHE_LIMIT_BYTES`, nothing is cached
and the engine falls back to double backward through the whole detector
(:class:`influal.influence.hvp.HessianOperator`), which gives the same products.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...influence.hvp import basis_blocks
from ...influence.params import ParamScope
from .gradients import direction_weights, scope_is_final
from .models import Detector

CACHE_LIMIT_BYTES = 2 << 30


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class HeadHessian:
    """``H`` = Hessian of the mean labeled loss (true boxes) on a scope within the final layers, from cached trunks.

    The same operator interface as :class:`~influal.influence.hvp.HessianOperator` (``full``, ``sample``,
    ``skip_sample``, ``dense``, ``n``, ``num_products``), and the same products up to float rounding. Build it with
    :func:`head_hessian`, which returns None where the cache would not fit.
    """

    def __init__(self, detector: Detector, scope: ParamScope, trunks: list, batch_size: int):
        self.detector, self.adapter, self.scope = detector, detector.adapter, scope
        self.trunks = trunks
        self.n = len(trunks)
        self.batch_size = max(1, int(batch_size))
        self.num_products = 0

    # ------------------------------------------------------------------ the loss of some cached images
    def _weights(self, flat: torch.Tensor | None):
        """The final layers' (weight, bias): the live parameters (``flat=None``), or the scope's entries taken from
        ``flat`` and the rest held fixed (the functional form :meth:`dense` differentiates)."""
        if flat is None:
            return self.adapter.current_weights()
        parts = self.scope.as_dict(flat)
        out = {}
        for name, (w, b) in self.adapter.current_weights(detach=True).items():
            w = parts[f"net.{name}.weight"].reshape(w.shape) if f"net.{name}.weight" in parts else w
            if b is not None and f"net.{name}.bias" in parts:
                b = parts[f"net.{name}.bias"].reshape(b.shape)
            out[name] = (w, b)
        return out

    def _groups(self, rows: Sequence[int]) -> list:
        trunks = [self.trunks[int(i)] for i in rows]
        joined = self.adapter.join(trunks) if len(trunks) > 1 else trunks[0]
        return [joined] if joined is not None else trunks

    def _mean_loss(self, groups: list, flat: torch.Tensor | None = None) -> torch.Tensor:
        weights = self._weights(flat)
        losses = [self.adapter.image_losses(g, self.adapter.pre_activations(g, weights)) for g in groups]
        return torch.cat(losses).mean()

    def _hvp(self, vec: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """H_B v = Jᵀ (∂²l/∂z²) J v, exactly: the pre-activations z are affine in the final layers' parameters, so the
        Hessian has no other term. J v is the final layers applied along v, the middle product a double backward
        through the loss alone (no convolution in it), Jᵀ one weight-gradient of the final layers."""
        groups = self._groups(rows)
        count = sum(g["n"] for g in groups)
        out = [torch.zeros_like(p) for p in self.scope.params]
        for g in groups:
            with torch.no_grad():
                along = self.adapter.pre_activations(g, direction_weights(self.detector, self.scope, vec))
            with torch.enable_grad():
                z = self.adapter.pre_activations(g, self.adapter.current_weights())
                live = [t for items in z.values() for t, _ in items]
                leaves = [t.detach().requires_grad_(True) for t in live]
                it = iter(leaves)
                loss = self.adapter.image_losses(g, {name: [(next(it), r) for _, r in items]
                                                     for name, items in z.items()}).sum() / count
                gz = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
                used = [i for i, d in enumerate(gz) if d is not None and d.requires_grad]
                tangents = [t for items in along.values() for t, _ in items]
                hz = torch.autograd.grad([gz[i] for i in used], [leaves[i] for i in used],
                                         grad_outputs=[tangents[i] for i in used], allow_unused=True)
                pairs = [(live[i], h) for i, h in zip(used, hz) if h is not None]
                hv = torch.autograd.grad([z for z, _ in pairs], self.scope.params, grad_outputs=[h for _, h in pairs],
                                         allow_unused=True)
            for acc, h in zip(out, hv):
                if h is not None:
                    acc += h
        self.num_products += 1
        return self.scope.flatten(out)

    def _chunks(self) -> list[np.ndarray]:
        return [np.arange(i, min(i + self.batch_size, self.n)) for i in range(0, self.n, self.batch_size)]

    # ------------------------------------------------------------------ the operator
    def full(self, vec: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vec)
        for rows in self._chunks():
            out += self._hvp(vec, rows) * (len(rows) / self.n)
        return out

    def skip_sample(self, generator: torch.Generator, batch_size: int) -> None:
        torch.randperm(self.n, generator=generator)

    def sample(self, vec: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """H_B v on ``batch_size`` labeled images drawn at random, as HessianOperator draws them."""
        return self._hvp(vec, torch.randperm(self.n, generator=generator)[:batch_size].tolist())

    def dense(self, chunk: int = 64) -> torch.Tensor:
        """The explicit Hessian [p, p], ``chunk`` columns at a time (``vmap`` over forward-over-reverse products)."""
        from torch.func import grad, jvp, vmap

        theta = self.scope.values()
        p = self.scope.numel
        H = torch.zeros(p, p, dtype=theta.dtype, device=theta.device)
        for rows in self._chunks():
            groups = self._groups(rows)

            def hvp(tangent: torch.Tensor, groups=groups) -> torch.Tensor:
                return jvp(grad(lambda flat: self._mean_loss(groups, flat)), (theta,), (tangent,))[1]

            weight = len(rows) / self.n
            for start, stop, basis in basis_blocks(p, chunk, theta):
                H[start:stop] += vmap(hvp)(basis).detach() * weight
        self.num_products += p
        return 0.5 * (H + H.T)


def head_hessian(detector: Detector, task, dataset, ids: Sequence[int], scope: ParamScope, batch_size: int,
                 limit: int = CACHE_LIMIT_BYTES) -> HeadHessian | None:
    """A :class:`HeadHessian` on the labeled ``ids`` (their true boxes), or None where the scope reaches beyond the
    final layers, the family cannot split its trunks, or the cache would pass ``limit`` bytes (estimated after each
    batch from the bytes per image so far, so a cache that will not fit stops early)."""
    if not scope_is_final(detector, scope):
        return None
    ids = np.asarray(ids, dtype=np.int64)
    adapter, trunks, size = detector.adapter, [], 0
    with torch.no_grad():
        for _, images, targets in task.batches(dataset, ids, batch_size):
            pieces = adapter.split(adapter.trunk(images, targets))
            if pieces is None:
                return None
            size += sum(_nbytes(t) for t in pieces)
            trunks.extend(pieces)
            if size / len(trunks) * len(ids) > limit:
                return None
    return HeadHessian(detector, scope, trunks, batch_size)
