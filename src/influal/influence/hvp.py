"""Hessian-vector products of the mean training loss over the labeled set, restricted to a parameter scope."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .params import ParamScope


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
            for start in range(0, p, chunk):
                stop = min(start + chunk, p)
                basis = torch.zeros(stop - start, p, dtype=theta.dtype, device=theta.device)
                basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                H[start:stop] += vmap(hvp)(basis).detach() * weight
        self.num_products += p
        return 0.5 * (H + H.T)


class LastLayerHessian:
    """Exact Hessian products for the final linear layer of a cross-entropy classifier, from cached features.

    With features f_i (the last layer's input) and probabilities p_i, the mean-loss Hessian w.r.t. (W, b) is
    (1/n) Σ_i (diag p_i - p_i p_iᵀ) ⊗ [f_i; 1][f_i; 1]ᵀ: positive semi-definite (the loss is convex in the last
    layer), so CG on H + λI always converges. One forward pass over the labeled set caches f and p; every
    product afterwards costs two small matrix products, whatever the backbone.
    """

    def __init__(self, model: nn.Module, task, dataset, ids: Sequence[int], scope: ParamScope, batch_size: int = 256):
        from ..models.introspect import forward_with_features, last_linear

        prefix, layer = last_linear(model)
        name = f"{prefix}." if prefix else ""
        self.scope = scope
        self.weight_name, self.bias_name = f"{name}weight", f"{name}bias"
        self.has_bias = self.bias_name in scope.names
        feats, probs = [], []
        with torch.no_grad():
            for _, x, _ in task.batches(dataset, np.asarray(ids, dtype=np.int64), batch_size):
                f, logits = forward_with_features(model, x)
                feats.append(f)
                probs.append(torch.softmax(logits, dim=1))
        self.features = torch.cat(feats)
        self.probs = torch.cat(probs)
        self.n = len(self.features)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.num_products = 0

    def _products(self, vecs: torch.Tensor, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """H V for k flat directions at once (rows of ``vecs``), averaged over the given samples."""
        k = len(vecs)
        parts = [self.scope.as_dict(v) for v in vecs]
        vw = torch.stack([p[self.weight_name] for p in parts])                      # [k, C, d]
        dz = torch.einsum("nd,kcd->knc", feats, vw)
        if self.has_bias:
            dz = dz + torch.stack([p[self.bias_name] for p in parts])[:, None, :]
        pdz = probs[None] * dz
        u = pdz - probs[None] * pdz.sum(-1, keepdim=True)                           # A_i dz_i, [k, n, C]
        hw = torch.einsum("knc,nd->kcd", u, feats) / len(feats)
        out = {self.weight_name: hw}
        if self.has_bias:
            out[self.bias_name] = u.sum(1) / len(feats)
        self.num_products += k
        return torch.stack([self.scope.flatten([out[n][j] for n in self.scope.names]) for j in range(k)])

    def full(self, vec: torch.Tensor) -> torch.Tensor:
        return self._products(vec[None], self.features, self.probs)[0]

    def sample(self, vec: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        pick = torch.randperm(self.n, generator=generator)[:batch_size].to(self.features.device)
        return self._products(vec[None], self.features[pick], self.probs[pick])[0]

    def dense(self, chunk: int = 64) -> torch.Tensor:
        p = self.scope.numel
        H = torch.zeros(p, p, dtype=self.features.dtype, device=self.features.device)
        for start in range(0, p, chunk):
            stop = min(start + chunk, p)
            basis = torch.zeros(stop - start, p, dtype=H.dtype, device=H.device)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            H[start:stop] = self._products(basis, self.features, self.probs)
        return 0.5 * (H + H.T)
