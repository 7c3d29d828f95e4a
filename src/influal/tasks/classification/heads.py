"""Model-agnostic access to a classifier's final linear layer (its head) and its input (the penultimate features)."""

from __future__ import annotations

import torch
from torch import nn

from ...core.errors import ConfigError


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` registered in the model: by convention its output layer."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear output layer; scope 'last' and feature-based "
                          "strategies need one (use scope 'weights' or add a final nn.Linear)")
    return found


def forward_with_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model and return ``(features, logits)`` where features are the input of the last linear layer."""
    _, layer = last_linear(model)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1), logits
