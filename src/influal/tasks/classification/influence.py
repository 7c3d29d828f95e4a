"""What classification offers the influence engine, honouring the task's own loss on the logits.

For a classifier the loss of a sample is ``l(z, y)`` with logits ``z = W f + b`` from the last linear layer
(features ``f``). Everything here needs only ``∂l/∂z`` and ``∂²l/∂z²``:

- the **closed form** for the last layer: ``g·s = (∂l/∂z) · (S_W f + s_b)``;
- the **JVP of the logits** for any scope: ``g·s = (∂l/∂z) · (J s)``, the argmax pseudo-label from the same pass;
- **central differences of the logits** for any scope (``fd``): ``J s ≈ (z(θ + h s) - z(θ - h s)) / 2h`` from two
  plain forward passes, with the pseudo-label and ``∂l/∂z`` taken at their mean (z(θ) + O(h²));
- the **fused layerwise** path (the engine's per-layer contraction with the pseudo-label from the same pass);
- the **last-layer Hessian** ``(1/n) Σ_i (∂²l_i/∂z²) ⊗ [f_i; 1][f_i; 1]ᵀ``, exact because the logits are linear
  in (W, b), from features cached in one forward pass.

For the task's cross-entropy (with label smoothing ε) ``∂l/∂z = p - ((1-ε) e_y + ε/C)`` and
``∂²l/∂z² = diag(p) - p pᵀ`` (convex). A subclass that overrides ``logit_loss`` gets both by autograd on the logits
(exact for any loss of the logits; CG is then chosen automatically only if the subclass sets
``convex_logit_loss = True``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...api import InfluenceHooks
from ...core.errors import ConfigError
from ...influence.grads import _functional, gs_layerwise, perturbed_params
from ...influence.hvp import basis_blocks
from .heads import forward_with_features, last_linear


def _final_names(model: nn.Module) -> list[str] | None:
    """The parameter names of the last nn.Linear (weight, bias), or None without one."""
    try:
        prefix, layer = last_linear(model)
    except ConfigError:
        return None
    return [n for n, _ in layer.named_parameters(prefix=prefix)]


class ClassificationInfluence(InfluenceHooks):
    fuses_pseudo_targets = True
    prefers_channels_last = True  # measured: CPU convolutions and pooling run much faster channels-last

    def __init__(self, task):
        self.task = task
        from .task import ClassificationTask

        self.builtin_loss = type(task).logit_loss is ClassificationTask.logit_loss
        self.convex = self.builtin_loss or task.convex_logit_loss

    # ------------------------------------------------------------------ scopes and choices
    def scope_names(self, model: nn.Module, scope: str) -> list[str] | None:
        if scope != "last":
            return None
        prefix, layer = last_linear(model)  # raises a ConfigError that says what to do without an nn.Linear
        return [n for n, _ in layer.named_parameters(prefix=prefix)]

    def is_final(self, model: nn.Module, scope) -> bool:
        names = _final_names(model)
        return names is not None and sorted(scope.names) == sorted(names)

    def auto_scope(self, model: nn.Module) -> str | None:
        return "last" if _final_names(model) is not None else None

    def convex_scope(self, model: nn.Module, scope) -> bool:
        return self.convex and self.is_final(model, scope)

    def preferred_method(self, model: nn.Module, scope) -> str | None:
        return "closed" if self.is_final(model, scope) else None

    def supports(self, method: str, model: nn.Module, scope) -> bool:
        return method == "closed" and self.is_final(model, scope)

    # ------------------------------------------------------------------ derivatives of the loss in the logits
    def logit_grad(self, logits: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂l/∂z [n, C], y), with y the argmax of the logits when None."""
        logits = logits.detach()
        if y is None:
            y = logits.argmax(1)
        if self.builtin_loss:
            resid = F.softmax(logits, dim=1)
            eps = self.task.label_smoothing
            if eps:
                resid -= eps / logits.shape[1]
                resid[torch.arange(len(y)), y] -= 1.0 - eps
            else:
                resid[torch.arange(len(y)), y] -= 1.0
            return resid, y
        z = logits.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.task.logit_loss(z, y).sum(), z)
        return grad.detach(), y

    def logit_hessians(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample ∂²l/∂z² [n, C, C] of a custom logit loss (the built-in one uses diag(p) - ppᵀ directly)."""
        from torch.func import hessian, vmap

        def one(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.task.logit_loss(z.unsqueeze(0), t.unsqueeze(0)).sum()

        return vmap(hessian(one), in_dims=(0, 0))(logits.detach(), y).detach()

    def fisher_loss(self, model, inputs, uniforms):
        """Cross-entropy at labels drawn from the model's softmax. Its gradients' covariance is the Gauss-Newton
        matrix Jᵀ(diag(p) - ppᵀ)J in expectation, which is also the built-in loss's with label smoothing (the
        smoothing shifts the gradient, not the logit Hessian). A custom ``logit_loss``: None (empirical Fisher)."""
        if not self.builtin_loss:
            return None
        logits = model(inputs)
        cdf = F.softmax(logits.detach().double(), dim=1).cumsum(1).cpu()
        y = torch.searchsorted(cdf, uniforms.reshape(-1, 1)).squeeze(1).clamp_max(cdf.shape[1] - 1)  # inverse CDF
        y = y.to(logits.device)
        return F.cross_entropy(logits, y, reduction="none")

    # ------------------------------------------------------------------ per-sample g·s
    def per_sample_dot(self, model, inputs, targets, scope, s, method):
        if method == "closed":
            with torch.no_grad():
                return self.closed_last(model, inputs, targets, scope, s)
        if method == "jvp":
            return self.jvp_logits(model, inputs, targets, scope, s)
        if method == "fd":
            return self.fd_logits(model, inputs, targets, scope, s)
        if method == "layerwise":
            return gs_layerwise(model, self.task, inputs, targets, scope, s, loss_of=self._fused_loss(targets))
        return None

    def _fused_loss(self, targets):
        def loss_of(m, x):
            logits = m(x)
            y = logits.argmax(1) if targets is None else targets
            return self.task.logit_loss(logits, y).sum()
        return loss_of

    def closed_last(self, model: nn.Module, x, y, scope, s: torch.Tensor) -> torch.Tensor:
        """g·s on the last linear layer: (∂l/∂z) · (S_W f + s_b), the pseudo-label from the same forward pass."""
        prefix, _ = last_linear(model)
        feats, logits = forward_with_features(model, x)
        parts = scope.as_dict(s)
        name = f"{prefix}." if prefix else ""
        proj = feats @ parts[f"{name}weight"].T
        if f"{name}bias" in parts:
            proj = proj + parts[f"{name}bias"]
        grad, _ = self.logit_grad(logits, y)
        return (grad * proj).sum(1)

    def per_sample_grads(self, model, inputs, targets, scope):
        """On the last linear layer g_i = (∂l_i/∂z) ⊗ [f_i; 1], laid out as the scope (weight row-major, then bias)."""
        if not self.is_final(model, scope):
            return None
        prefix, _ = last_linear(model)
        name = f"{prefix}." if prefix else ""
        with torch.no_grad():
            feats, logits = forward_with_features(model, inputs)
            grad, _ = self.logit_grad(logits, targets)
            parts = {f"{name}weight": (grad[:, :, None] * feats[:, None, :]).flatten(1), f"{name}bias": grad}
            return torch.cat([parts[n] for n in scope.names], dim=1)

    def jvp_logits(self, model: nn.Module, x, y, scope, s: torch.Tensor) -> torch.Tensor:
        """Forward mode: one JVP of the logits gives the pseudo-label and every g_i·s = (∂l_i/∂z) · J_i s."""
        from torch.func import jvp

        with_params = _functional(model, scope)
        primals = {n: p.detach() for n, p in zip(scope.names, scope.params)}
        logits, dlogits = jvp(lambda scoped: with_params(scoped)(x), (primals,), (scope.as_dict(s),))
        grad, _ = self.logit_grad(logits, y)
        return (grad * dlogits.detach()).sum(1)

    def fd_logits(self, model: nn.Module, x, y, scope, s: torch.Tensor) -> torch.Tensor:
        """Central differences: two plain forward passes give J s ≈ (z₊ - z₋) / 2h and, from z ≈ (z₊ + z₋) / 2, the
        pseudo-label and ∂l/∂z; g_i·s = (∂l_i/∂z) · J_i s. About 2x inference on any scope."""
        from torch.func import functional_call

        plus, minus, h = perturbed_params(model, scope, s)
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            up = functional_call(model, (plus, buffers), (x,))
            down = functional_call(model, (minus, buffers), (x,))
            grad, _ = self.logit_grad((up + down) * 0.5, y)
            return (grad * (up - down)).sum(1) / (2 * h)

    # ------------------------------------------------------------------ Hessian
    def hessian(self, model, dataset, ids, scope, batch_size):
        if not self.is_final(model, scope):
            return None
        return LastLayerHessian(model, self, dataset, ids, scope, batch_size)


class LastLayerHessian:
    """Exact Hessian products for a classifier's final linear layer, from cached features.

    With features f_i (the last layer's input) and the per-sample logit Hessians A_i = ∂²l_i/∂z², the mean-loss
    Hessian w.r.t. (W, b) is (1/n) Σ_i A_i ⊗ [f_i; 1][f_i; 1]ᵀ. For cross-entropy A_i = diag p_i - p_i p_iᵀ
    (positive semi-definite: CG on H + λI always converges). One forward pass over the labeled set (true labels)
    caches f and p (or A); every product afterwards costs two small matrix products, whatever the backbone.
    """

    def __init__(self, model: nn.Module, hooks: ClassificationInfluence, dataset, ids: Sequence[int], scope,
                 batch_size: int = 256):
        prefix, _ = last_linear(model)
        name = f"{prefix}." if prefix else ""
        self.scope = scope
        self.weight_name, self.bias_name = f"{name}weight", f"{name}bias"
        self.has_bias = self.bias_name in scope.names
        self.ids = np.asarray(ids, dtype=np.int64)
        feats, probs, hessians = [], [], []
        with torch.no_grad():
            for _, x, y in hooks.task.batches(dataset, self.ids, batch_size):
                f, logits = forward_with_features(model, x)
                feats.append(f)
                if hooks.builtin_loss:
                    probs.append(torch.softmax(logits, dim=1))
                else:
                    hessians.append(hooks.logit_hessians(logits, y))
        self.features = torch.cat(feats)
        self.probs = torch.cat(probs) if probs else None
        self.logit_hessians = torch.cat(hessians) if hessians else None
        self.n = len(self.features)
        self.num_products = 0

    def _apply_logit_hessian(self, dz: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """A_i dz_i for k directions [k, n, C]."""
        if self.probs is not None:
            probs = self.probs if rows is None else self.probs[rows]
            pdz = probs[None] * dz
            return pdz - probs[None] * pdz.sum(-1, keepdim=True)
        hess = self.logit_hessians if rows is None else self.logit_hessians[rows]
        return torch.einsum("nce,kne->knc", hess, dz)

    def _products(self, vecs: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """H V for k flat directions at once (rows of ``vecs``), averaged over the given samples."""
        feats = self.features if rows is None else self.features[rows]
        k = len(vecs)
        parts = [self.scope.as_dict(v) for v in vecs]
        vw = torch.stack([p[self.weight_name] for p in parts])                      # [k, C, d]
        dz = torch.einsum("nd,kcd->knc", feats, vw)
        if self.has_bias:
            dz = dz + torch.stack([p[self.bias_name] for p in parts])[:, None, :]
        u = self._apply_logit_hessian(dz, rows)                                      # [k, n, C]
        hw = torch.einsum("knc,nd->kcd", u, feats) / len(feats)
        out = {self.weight_name: hw}
        if self.has_bias:
            out[self.bias_name] = u.sum(1) / len(feats)
        self.num_products += k
        return torch.stack([self.scope.flatten([out[n][j] for n in self.scope.names]) for j in range(k)])

    def full(self, vec: torch.Tensor) -> torch.Tensor:
        return self._products(vec[None])[0]

    def skip_sample(self, generator: torch.Generator, batch_size: int) -> None:
        """Advance ``generator`` as :meth:`sample` does (a LiSSA chain another rank runs)."""
        torch.randperm(self.n, generator=generator)

    def sample(self, vec: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        pick = torch.randperm(self.n, generator=generator)[:batch_size].to(self.features.device)
        return self._products(vec[None], pick)[0]

    def dense(self, chunk: int = 64) -> torch.Tensor:
        p = self.scope.numel
        H = torch.zeros(p, p, dtype=self.features.dtype, device=self.features.device)
        for start, stop, basis in basis_blocks(p, chunk, H):
            H[start:stop] = self._products(basis)
        return 0.5 * (H + H.T)
