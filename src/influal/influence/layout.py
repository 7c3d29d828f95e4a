"""Memory layout of the scoring pass: channels-last convolutions on the CPU, without touching values.

On the CPU, oneDNN's convolutions and PyTorch's pooling kernels are several times faster on channels-last
(NHWC) activations than on the default NCHW layout (max-pooling in particular). A model's activations follow
the layout of its convolution weights, so the engine re-strides the 4-D parameters for the duration of a pass
and restores them afterwards. Only strides change: every value, every ``Parameter`` object (and so every
optimizer reference to it) and the model's ``state_dict`` stay the same. Scores agree with the NCHW pass to
float rounding (tested).

``memory_format`` settings: ``auto`` (channels-last on the CPU for a model with 2-D convolutions, when the task
hooks declare ``prefers_channels_last``: classification does, where it was measured; detectors keep their layout),
``channels_last`` (always, for 4-D parameters) and ``preserve`` (never re-stride).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..core.errors import ConfigError
from ..settings import MEMORY_FORMATS


def wants_channels_last(model: nn.Module, memory_format: str, prefers: bool = False) -> bool:
    """Whether a pass over ``model`` should run channels-last under the setting ``memory_format``; ``prefers``:
    the task's hooks prefer it (``auto`` follows that on the CPU for models with 2-D convolutions)."""
    if memory_format not in MEMORY_FORMATS:
        raise ConfigError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    if memory_format == "preserve":
        return False
    if memory_format == "channels_last":
        return True
    params = list(model.parameters())
    on_cpu = bool(params) and params[0].device.type == "cpu"
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return on_cpu and has_conv and bool(prefers)


@contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Re-stride the model's 4-D parameters to channels-last inside the block; restore their own strides on exit
    (also on error). Nesting is harmless."""
    changed: list[tuple[nn.Parameter, tuple[int, ...]]] = []
    if enabled:
        for p in model.parameters():
            if p.ndim == 4:
                restrided = p.data.to(memory_format=torch.channels_last)  # .contiguous() keeps 1-channel weights
                if restrided.stride() != p.stride():
                    changed.append((p, p.stride()))
                    p.data = restrided
    try:
        yield model
    finally:
        for p, stride in changed:
            original = torch.empty_strided(p.shape, stride, dtype=p.dtype, device=p.device)
            p.data = original.copy_(p.data)
