"""Parameter scopes: which parameters ISAL differentiates, and flat-vector views of them."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError


class ParamScope:
    """An ordered set of a model's parameters, with conversion to and from one flat vector.

    ``scope`` is ``"weights"`` (every trainable parameter with more than one dimension, as the official ISAL
    code), ``"all"`` (every trainable parameter), a name the task's hooks define (``"last"``: a classifier's
    final ``nn.Linear``, weight and bias; ``hooks.scope_names(model, name)``), or a sequence of parameter or
    module names (a module name takes all its parameters).
    """

    def __init__(self, model: nn.Module, scope: str | Sequence[str], hooks=None):
        named = dict(model.named_parameters())
        task_names = hooks.scope_names(model, scope) if hooks is not None and isinstance(scope, str) else None
        if task_names is not None:
            names = list(task_names)
        elif scope == "last":
            raise ConfigError("scope 'last' means a task's final layer (a classifier's nn.Linear); this task or "
                              "model defines none: use 'weights' or 'all'")
        elif scope == "weights":
            names = [n for n, p in named.items() if p.requires_grad and p.ndim > 1]
        elif scope == "all":
            names = [n for n, p in named.items() if p.requires_grad]
        elif isinstance(scope, str):
            raise ConfigError(f"unknown parameter scope {scope!r}; use 'last', 'weights', 'all' or a list of names")
        else:
            names = []
            for item in scope:
                matches = [n for n in named if n == item or n.startswith(item + ".")]
                if not matches:
                    raise ConfigError(f"parameter scope names {item!r}, which is not a parameter or module of the model")
                names.extend(m for m in matches if m not in names)
        if not names:
            raise ConfigError(f"parameter scope {scope!r} selects no parameters of {type(model).__name__}")
        self.model = model
        self.names = names
        self.params = [named[n] for n in names]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.numel = sum(self.sizes)

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vec: torch.Tensor) -> list[torch.Tensor]:
        return [chunk.view(shape) for chunk, shape in zip(vec.split(self.sizes), self.shapes)]

    def as_dict(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.unflatten(vec)))

    def values(self) -> torch.Tensor:
        return self.flatten([p.detach() for p in self.params])

    def grad(self, loss: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """Flat gradient of a scalar loss w.r.t. the scope (zeros for parameters the loss does not reach)."""
        grads = torch.autograd.grad(loss, self.params, create_graph=create_graph, allow_unused=True)
        return self.flatten([torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)])
