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

from .base import Selection, SelectionContext, check_budget, take_lowest


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


class UncertaintyStrategy:
    """Scores every unlabeled item from ``task.predict_proba`` and takes the ``budget`` lowest scores."""

    def __init__(self, name: str, score_fn: Callable[[torch.Tensor], torch.Tensor]):
        self.name = name
        self.score_fn = score_fn

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        probs = ctx.task.predict_proba(ctx.model, ctx.pool, ctx.unlabeled_ids)
        scores = self.score_fn(probs.double()).numpy().astype(np.float64)
        return Selection(take_lowest(ctx.unlabeled_ids, scores, budget), scores)


def EntropyStrategy() -> UncertaintyStrategy:  # noqa: N802 - a constructor for the registry
    return UncertaintyStrategy("entropy", neg_entropy)


def MarginStrategy() -> UncertaintyStrategy:  # noqa: N802
    return UncertaintyStrategy("margin", top2_margin)


def LeastConfidenceStrategy() -> UncertaintyStrategy:  # noqa: N802
    return UncertaintyStrategy("least_confidence", top_probability)
