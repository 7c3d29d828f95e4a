"""The strategy interface: given a trained model, L, U and a budget B, which B items of U to label next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from ..config import InfluenceConfig
from ..errors import ConfigError


@dataclass
class SelectionContext:
    """Everything a strategy may look at. Ids index ``pool``; the reference set is a held-out split."""

    model: nn.Module
    task: Any
    pool: Any
    labeled_ids: np.ndarray
    unlabeled_ids: np.ndarray
    reference: Any = None
    reference_ids: np.ndarray | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    progress: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labeled_ids = np.asarray(self.labeled_ids, dtype=np.int64)
        self.unlabeled_ids = np.asarray(self.unlabeled_ids, dtype=np.int64)
        if self.reference is not None and self.reference_ids is None:
            self.reference_ids = np.arange(len(self.reference))


@dataclass
class Selection:
    """The chosen ids (in order of preference) and, where the strategy scores items, their scores."""

    ids: np.ndarray
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = dict(self.info)
        if self.scores is not None and len(self.scores):
            out.update(score_min=float(np.min(self.scores)), score_mean=float(np.mean(self.scores)),
                       score_max=float(np.max(self.scores)))
        return out


class Strategy(Protocol):
    name: str

    def select(self, ctx: SelectionContext, budget: int) -> Selection: ...


def check_budget(ctx: SelectionContext, budget: int) -> None:
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ConfigError(f"budget must be an integer >= 1, got {budget!r}")
    if budget > len(ctx.unlabeled_ids):
        raise ConfigError(f"budget {budget} exceeds the {len(ctx.unlabeled_ids)} unlabeled items left in the pool")


def take_lowest(ids: np.ndarray, scores: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` ids with the lowest scores; ties broken by id so the choice is deterministic."""
    order = np.lexsort((ids, scores))
    return ids[order[:budget]]


def ids_array(ids: Sequence[int]) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64)
