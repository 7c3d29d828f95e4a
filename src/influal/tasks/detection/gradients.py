"""ISAL's per-image ``g_z·s`` for detectors, with respect to the heads' final layers.

Each final layer is linear in its parameters: its pre-activation is ``z = W * f + b`` (a convolution or a
matrix product of the trunk features ``f``). For a direction ``s = (s_W, s_b)`` the chain rule gives

    g_i · s = Σ ⟨∂l_i/∂z, s_W * f + s_b⟩

and because the images of a batch are independent in eval mode, ``∂l_i/∂z`` for every image comes from a
single backward of ``Σ_i l_i`` with respect to ``z``. So a batch costs one trunk pass (backbone, FPN, towers,
matching, proposal sampling), the final layers twice (at the weights and along ``s``), the per-image losses and
one small backward: no per-image backward and no per-image gradient is ever built.
"""

from __future__ import annotations

import torch

from ...influence.params import ParamScope
from .models import Detector


def scope_is_final(detector: Detector, scope: ParamScope) -> bool:
    """True when every parameter of ``scope`` belongs to one of the heads' final layers."""
    return set(scope.names) <= set(detector.final_parameter_names(biases=True))


def direction_weights(detector: Detector, scope: ParamScope, s: torch.Tensor):
    """``s`` as ``{final layer: (s_W, s_b)}``; parameters outside the scope move by zero."""
    parts = scope.as_dict(s)
    out = {}
    for name, (w, b) in detector.adapter.current_weights(detach=True).items():
        full = f"net.{name}"
        s_w = parts.get(f"{full}.weight", torch.zeros_like(w))
        s_b = None if b is None else parts.get(f"{full}.bias", torch.zeros_like(b))
        out[name] = (s_w.reshape(w.shape), None if s_b is None else s_b.reshape(b.shape))
    return out


def _per_image(product: torch.Tensor, rows: torch.Tensor | None, n: int) -> torch.Tensor:
    if rows is None:
        return product.reshape(n, -1).sum(1)
    return torch.zeros(n, dtype=product.dtype, device=product.device).index_add_(0, rows,
                                                                                 product.reshape(len(rows), -1).sum(1))


def per_image_dot(detector: Detector, images: list[torch.Tensor], targets: list[dict] | None, scope: ParamScope,
                  s: torch.Tensor, trunk=None) -> torch.Tensor | None:
    """``g_i·s`` for every image [n], or ``None`` if the scope reaches beyond the final layers. ``trunk`` (instead of
    ``targets``): the batch's trunk, already built (:meth:`HeadAdapter.pseudo_trunk`)."""
    if not scope_is_final(detector, scope):
        return None
    adapter = detector.adapter
    with torch.no_grad():
        trunk = adapter.trunk(images, targets) if trunk is None else trunk
        along = adapter.pre_activations(trunk, direction_weights(detector, scope, s))
    with torch.enable_grad():
        z = adapter.pre_activations(trunk, adapter.current_weights(detach=True))
        leaves = [t.detach().requires_grad_(True) for items in z.values() for t, _ in items]
        it = iter(leaves)
        z = {name: [(next(it), rows) for _, rows in items] for name, items in z.items()}
        losses = adapter.image_losses(trunk, z)
        grads = torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
    n = len(images)
    total = torch.zeros(n, device=losses.device)
    g = iter(grads)
    for name, items in along.items():
        for t, rows in items:
            grad = next(g)
            if grad is not None:
                total += _per_image(grad * t, rows, n)
    return total.detach()
