"""Gradients for influence: the summed reference gradient v, and per-sample g_z·s for whole batches.

Per-sample scores never materialise a per-sample gradient of the whole pool:
- a task's own fast path (its :class:`~influal.api.InfluenceHooks`): classification's closed form for the final
  linear layer, detection's one-backward head gradients;
- ``jvp``:    one forward-mode pass gives the directional derivative of every per-sample loss along s;
- ``layerwise``: for scopes made of nn.Linear / nn.Conv2d weights and biases: one forward, one backward to the
              layers' outputs (per-sample δ, since samples are independent in eval mode), then
              g_i·s = Σ_layers ⟨δ_i, S ⋆ a_i⟩, where S ⋆ a_i applies the layer's slice of s to its input;
- ``fd``:     central differences along s, (l_i(θ + h s) - l_i(θ - h s)) / 2h: two plain forward passes, so
              about 2x inference whatever the scope (``layerwise`` and ``jvp`` cost about 3 convolutions per
              layer); exact up to O(h²) and to the ReLU / max-pool kinks the step crosses (measured on the weight
              tensors of the trained small CNN and ResNet-18: Spearman 0.99999 / 0.9999 against ``layerwise``,
              relative error 9e-4 / 3e-3; docs/benchmarks.md). Opt-in: ``auto`` keeps the exact methods;
- ``vmap``:   per-sample gradients of one batch (torch.func.vmap(grad)), reduced against s at once;
- ``loop``:   batch-size-1 autograd, the reference implementation used by tests and benchmarks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from .params import ParamScope

Batches = Iterable[tuple[torch.Tensor, Any, Any]]


def reference_gradient(model: nn.Module, task, batches: Batches, scope: ParamScope) -> torch.Tensor:
    """v = Σ_r ∇ l(r, y_r): one backward of the summed loss per batch."""
    v = torch.zeros(scope.numel, device=scope.params[0].device, dtype=scope.params[0].dtype)
    for _, x, y in batches:
        v += scope.grad(task.loss(model, x, y).sum()).detach()
    return v


def _functional(model: nn.Module, scope: ParamScope) -> Callable[[dict[str, torch.Tensor]], Callable]:
    from torch.func import functional_call

    base = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def with_params(scoped: dict[str, torch.Tensor]) -> Callable:
        params = dict(base)
        params.update(scoped)
        return lambda inp: functional_call(model, (params, buffers), (inp,))

    return with_params


def gs_loop(model: nn.Module, task, x, y, scope: ParamScope, s: torch.Tensor) -> torch.Tensor:
    """Reference: one backward per sample."""
    out = []
    for i in range(len(y)):
        xi = x[i:i + 1]
        yi = y[i:i + 1]
        out.append(scope.grad(task.loss(model, xi, yi).sum()) @ s)
    return torch.stack(out).detach()


def per_sample_grads(model: nn.Module, task, x, y, scope: ParamScope, hooks=None) -> torch.Tensor:
    """Every sample's flat gradient on the scope [n, d]: the task's own form where it has one, else one backward
    per sample (exact for any model; what the batch-aware strategies materialise for a small scope)."""
    if hooks is not None:
        grads = hooks.per_sample_grads(model, x, y, scope)
        if grads is not None:
            return grads.detach()
    if y is None:
        y = task.pseudo_targets(model, x)
    return torch.stack([scope.grad(task.loss(model, x[i:i + 1], y[i:i + 1]).sum()) for i in range(len(y))]).detach()


def gs_jvp(model: nn.Module, task, x, y, scope: ParamScope, s: torch.Tensor) -> torch.Tensor:
    """Forward-mode: d/dε l_i(θ + ε s) for every i in one pass."""
    from torch.func import jvp

    with_params = _functional(model, scope)
    primals = {n: p.detach() for n, p in zip(scope.names, scope.params)}
    tangents = scope.as_dict(s)

    def losses(scoped):
        return task.loss(with_params(scoped), x, y)

    return jvp(losses, (primals,), (tangents,))[1].detach()


#: the central-difference step relative to the scope's size: h = FD_STEP · ‖θ‖ / ‖s‖ (measured on float32 CNNs:
#: 1e-4 is dominated by the kinks it crosses, 1e-6 by rounding; 1e-5 and 3e-5 both rank at Spearman >= 0.9995)
FD_STEP = 2e-5

_perturbed_cache: dict[str, Any] = {}


def perturbed_params(model: nn.Module, scope: ParamScope, s: torch.Tensor, step: float | None = None):
    """(θ + h s, θ - h s, h) as full parameter dicts for ``functional_call``, with h = step · ‖θ_scope‖ / ‖s‖.

    Each copy keeps its parameter's memory layout (a channels-last pass stays channels-last). The last pair is
    kept for the next batch of the same pass: the key is s (by identity and version) and every scoped parameter's
    storage and version, so an optimizer step, a re-strided layout or a new s rebuilds it. ``step`` defaults to
    :data:`FD_STEP` (read at call time)."""
    step = FD_STEP if step is None else step
    key = (id(model), id(s), s._version, step, tuple((p.data_ptr(), p._version) for p in scope.params))
    if _perturbed_cache.get("key") == key:
        return _perturbed_cache["value"]
    base = {n: p.detach() for n, p in model.named_parameters()}
    s_norm = float(s.norm())
    theta_norm = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in scope.params)))
    h = step * (theta_norm if theta_norm > 0 else 1.0) / (s_norm if s_norm > 0 else 1.0)
    plus, minus = dict(base), dict(base)
    for name, direction in scope.as_dict(s).items():
        plus[name] = base[name].clone().add_(direction, alpha=h)  # clone keeps the parameter's strides
        minus[name] = base[name].clone().add_(direction, alpha=-h)
    value = (plus, minus, h)
    _perturbed_cache.update(key=key, value=value)
    return value


def release_perturbed() -> None:
    """Drop the kept (θ + h s, θ - h s) pair (the engine calls it at the end of each scoring pass)."""
    _perturbed_cache.clear()


def gs_fd(model: nn.Module, task, x, y, scope: ParamScope, s: torch.Tensor, step: float | None = None) -> torch.Tensor:
    """Central differences of every per-sample loss along s: two forward passes (see the module docstring)."""
    from torch.func import functional_call

    plus, minus, h = perturbed_params(model, scope, s, step)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        up = task.loss(lambda inp: functional_call(model, (plus, buffers), (inp,)), x, y)
        down = task.loss(lambda inp: functional_call(model, (minus, buffers), (inp,)), x, y)
    return ((up - down) / (2 * h)).detach()


def gs_vmap(model: nn.Module, task, x, y, scope: ParamScope, s: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients of one batch by vmap(grad), contracted with s."""
    from torch.func import grad, vmap

    with_params = _functional(model, scope)
    primals = {n: p.detach() for n, p in zip(scope.names, scope.params)}
    s_parts = scope.as_dict(s)

    def one(scoped, xi, yi):
        return task.loss(with_params(scoped), xi.unsqueeze(0), yi.unsqueeze(0)).sum()

    grads = vmap(grad(one), in_dims=(None, 0, 0))(primals, x, y)
    return sum((grads[n].flatten(1) @ s_parts[n].flatten()) for n in scope.names).detach()


_LAYERWISE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layerwise_modules(model: nn.Module, scope: ParamScope) -> list[tuple[str, nn.Module]] | None:
    """The Linear/Conv modules that hold every scoped parameter (as weight or bias), or None if some scoped
    parameter lives elsewhere (BatchNorm, custom modules, transposed convs...)."""
    owners = {}
    for name, module in model.named_modules():
        if isinstance(module, _LAYERWISE_TYPES) and getattr(module, "padding_mode", "zeros") == "zeros":
            for pname, _ in module.named_parameters(prefix=name, recurse=False):
                owners[pname] = name
    if not all(n in owners for n in scope.names):
        return None
    names = sorted({owners[n] for n in scope.names}, key=list(dict(model.named_modules())).index)
    return [(n, model.get_submodule(n)) for n in names]


def _apply_slice(module: nn.Module, inp: torch.Tensor, weight, bias) -> torch.Tensor:
    """The layer's affine map with (weight, bias) replaced by the direction's slices (None: zero)."""
    if weight is None:
        out = torch.zeros((), dtype=inp.dtype, device=inp.device)
    elif isinstance(module, nn.Linear):
        out = F.linear(inp, weight)
    else:
        conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(module)]
        if weight.stride() != module.weight.stride():  # the layer's own layout (channels-last, see layout.py)
            weight = torch.empty_strided(weight.shape, module.weight.stride(), dtype=weight.dtype,
                                         device=weight.device).copy_(weight)
        out = conv(inp, weight, None, module.stride, module.padding, module.dilation, module.groups)
    if bias is not None:
        shape = [-1] + [1] * (inp.ndim - 2) if not isinstance(module, nn.Linear) else [-1]
        out = out + bias.view(*shape)
    return out


def gs_layerwise(model: nn.Module, task, x, y, scope: ParamScope, s: torch.Tensor,
                 loss_of: Callable[[nn.Module, Any], torch.Tensor] | None = None) -> torch.Tensor:
    """Reverse-mode per-layer contraction (see the module docstring).

    ``loss_of(model, x)`` is the summed loss of the batch (default ``task.loss(model, x, y).sum()``); a task's
    hook passes its own to fuse the pseudo-targets into the same forward pass.
    """
    modules = layerwise_modules(model, scope)
    if modules is None:
        raise ConfigError("gs_method 'layerwise' needs every scoped parameter to belong to an nn.Linear or "
                          "nn.Conv layer; use 'jvp'")
    if loss_of is None:
        def loss_of(m, inputs):
            return task.loss(m, inputs, y).sum()
    parts = scope.as_dict(s)
    calls: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]] = []
    handles = []
    for name, module in modules:
        def hook(mod, inputs, output, name=name):
            calls.append((mod, name, inputs[0].detach(), output))
            return output.clone()  # a later in-place op (ReLU(inplace=True)) must not alter the kept output
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            loss = loss_of(model, x)
            deltas = torch.autograd.grad(loss, [out for *_, out in calls], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    total = torch.zeros(len(x), dtype=s.dtype, device=s.device)
    for (module, name, inp, _), delta in zip(calls, deltas):
        if delta is None:  # this output does not reach the loss
            continue
        # ⟨δ_i, S⋆a_i⟩ per sample, in place and without a reshape (any memory layout)
        product = _apply_slice(module, inp, parts.get(f"{name}.weight"), parts.get(f"{name}.bias"))
        product = product.mul_(delta) if product.shape == delta.shape else product * delta
        total += product.sum(dim=tuple(range(1, product.ndim))) if product.ndim > 1 else product
    return total.detach()


GS_METHODS = {"loop": gs_loop, "jvp": gs_jvp, "vmap": gs_vmap, "layerwise": gs_layerwise, "fd": gs_fd}


def choose_method(method: str, model: nn.Module, task, scope: ParamScope, hooks=None) -> str:
    """The g·s method to run: ``auto`` asks the task's hooks first, then takes ``layerwise`` where every scoped
    parameter lives in a Linear/Conv layer, else ``jvp``. ``closed`` exists only where a hook offers it."""
    if method == "auto":
        preferred = hooks.preferred_method(model, scope) if hooks is not None else None
        if preferred is not None:
            return preferred
        return "layerwise" if layerwise_modules(model, scope) is not None else "jvp"
    if method == "closed" and (hooks is None or not hooks.supports("closed", model, scope)):
        raise ConfigError("gs_method 'closed' needs a task that offers a closed form on this scope (a classifier's "
                          "final nn.Linear with scope 'last'); use 'auto' or 'jvp'")
    return method


def per_sample_dot(model: nn.Module, task, x, y, scope: ParamScope, s: torch.Tensor, method: str,
                   hooks=None) -> torch.Tensor:
    """g_i·s for every sample i of one batch, with targets ``y`` (``y=None``: the task's pseudo-targets).

    The task's hooks (``task.influence_hooks()``) are asked first; they return None to fall back to the
    generic methods, which take the pseudo-targets from ``task.pseudo_targets``.
    """
    if hooks is not None:
        result = hooks.per_sample_dot(model, x, y, scope, s, method)
        if result is not None:
            return result
    if method == "closed":
        raise ConfigError("gs_method 'closed' is not offered by this task on this scope; use 'auto' or 'jvp'")
    if y is None:
        y = task.pseudo_targets(model, x)
    return GS_METHODS[method](model, task, x, y, scope, s)
