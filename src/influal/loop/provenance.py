"""What an experiment ran on: the data's and the model's identity, recorded in config.json and checked on resume.

The data: each split's size, the classes and input shape, and a content fingerprint of every split (a data set may
define ``fingerprint() -> str``; otherwise the fingerprint hashes its length and the bytes of up to 16 items spread
over it). The model: its class, parameter count and a hash of its parameter names and shapes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from ..api import DatasetSplits

SAMPLE = 16


def _update(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        for key in sorted(obj):
            h.update(str(key).encode())
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _update(h, item)
    else:
        h.update(repr(obj).encode())


def fingerprint(dataset) -> str:
    """A content fingerprint of a data set (its own ``fingerprint()`` where it has one)."""
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        return str(own())
    n = len(dataset)
    h = hashlib.sha256(f"{type(dataset).__name__}:{n}".encode())
    picks = sorted(set(np.linspace(0, n - 1, num=min(SAMPLE, n), dtype=np.int64).tolist())) if n else []
    get_batch = getattr(dataset, "get_batch", None)
    try:
        for i in picks:
            _update(h, get_batch([int(i)]) if callable(get_batch) else dataset[int(i)])
    except (NotImplementedError, TypeError, IndexError, KeyError):
        h.update(b"unreadable items")  # a data set that can only be batched its own way: its length alone
    return h.hexdigest()[:16]


def data_identity(splits: DatasetSplits) -> dict[str, Any]:
    return {"name": splits.name, "pool": len(splits.pool), "val": len(splits.val), "test": len(splits.test),
            "num_classes": splits.num_classes, "in_channels": splits.in_channels, "image_size": splits.image_size,
            "fingerprint": {part: fingerprint(getattr(splits, part)) for part in ("pool", "val", "test")}}


def model_identity(model: nn.Module) -> dict[str, Any]:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "parameters": int(sum(p.numel() for p in
                                                                                   model.parameters())),
            "architecture": h.hexdigest()[:16]}


def differences(saved: Any, given: Any, prefix: str = "") -> list[str]:
    """The dotted names of the fields that differ between two JSON-like values (for an error that names them)."""
    if isinstance(saved, dict) and isinstance(given, dict):
        out = []
        for key in sorted(set(saved) | set(given), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in given:
                out.append(name)
            else:
                out.extend(differences(saved[key], given[key], name))
        return out
    return [] if saved == given else [prefix or "value"]


def show(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"
