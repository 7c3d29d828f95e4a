"""Uncertainty sampling on the softmax of the trained model: entropy, margin and least confidence.

Each is a score over the predicted class probabilities p (eval mode), with the package convention that the
lowest score is selected first:

- ``entropy``:          score = -H(p) = Σ p log p            (most uncertain = highest entropy first)
- ``margin``:           score = p_(1) - p_(2)                (smallest gap between the two top classes first)
- ``least_confidence``: score = p_(1) = max_c p_c            (lowest top-class probability first)

Ties are broken by pool id, so selections are deterministic.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..api import PROBABILITIES, Selection, SelectionContext, Strategy, check_budget, take_lowest
from .sharding import per_item


def neg_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Σ_c p_c log p_c per row (0 log 0 = 0); minus the Shannon entropy in nats."""
    return torch.where(probs > 0, probs * probs.clamp_min(1e-30).log(), torch.zeros_like(probs)).sum(dim=1)


def top2_margin(probs: torch.Tensor) -> torch.Tensor:
    """p_(1) - p_(2) per row; the top probability itself when there is a single class."""
    if probs.shape[1] < 2:
        return probs[:, 0].clone()
    top = probs.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def top_probability(probs: torch.Tensor) -> torch.Tensor:
    return probs.max(dim=1).values


class UncertaintyStrategy(Strategy):
    """Scores every unlabeled item from ``task.predict_proba`` and takes the ``budget`` lowest scores."""

    requires = frozenset({PROBABILITIES})
    shards = True
    score_fn: Callable[[torch.Tensor], torch.Tensor]

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        probs = per_item(ctx.unlabeled_ids, lambda ids: ctx.task.predict_proba(ctx.model, ctx.pool, ids))
        scores = type(self).score_fn(probs.double()).numpy().astype(np.float64)
        return Selection(take_lowest(ctx.unlabeled_ids, scores, budget), scores)


class EntropyStrategy(UncertaintyStrategy):
    """Highest predictive entropy first."""

    name = "entropy"
    score_fn = staticmethod(neg_entropy)


class MarginStrategy(UncertaintyStrategy):
    """Smallest gap between the two most probable classes first."""

    name = "margin"
    score_fn = staticmethod(top2_margin)


class LeastConfidenceStrategy(UncertaintyStrategy):
    """Lowest top-class probability first."""

    name = "least_confidence"
    score_fn = staticmethod(top_probability)
