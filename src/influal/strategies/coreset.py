"""Core-set (Sener & Savarese, 2018): k-center greedy on the task's embeddings, from the labeled set.

As in the official ISAL code (``greedy_k_center``), the greedy starts from the labeled set: every unlabeled
point's distance to its nearest labeled point is computed first, then the point farthest from all centres is
taken, it becomes a centre, and the distances are updated, ``budget`` times. Distances are Euclidean, in float64,
over blocks of bounded size (:func:`~influal.strategies.kernels.k_center_greedy`). The embedding is
``task.features``: a classifier's penultimate features, a detector's pooled head features.
"""

from __future__ import annotations

import numpy as np
import torch

from ..api import FEATURES, Selection, SelectionContext, Strategy, check_budget
from ..core.torch_utils import eval_mode
from .kernels import k_center_greedy
from .sharding import per_item


def collect_features(model, task, dataset, ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """``task.features`` of ``ids`` in eval mode, as one CPU tensor [n, d]."""
    with eval_mode(model), torch.no_grad():
        out = [task.features(model, x).cpu() for _, x, _ in task.batches(dataset, ids, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)


class CoresetStrategy(Strategy):
    """Core-set selection by k-center greedy on ``task.features``, from the labeled set.

    No scores (the batch is built greedily); ``info`` records the covering radius at the first and last pick.
    """

    name = "coreset"
    requires = frozenset({FEATURES})
    cold_start = True  # k-center greedy on an untrained network's features still spreads the batch out
    shards = True

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        batch_size = self.batch_size or ctx.task.eval_batch_size
        unlabeled = per_item(ctx.unlabeled_ids, lambda ids: collect_features(ctx.model, ctx.task, ctx.pool, ids,
                                                                             batch_size))
        labeled = per_item(ctx.labeled_ids, lambda ids: collect_features(ctx.model, ctx.task, ctx.pool, ids,
                                                                         batch_size))
        picked, radii = k_center_greedy(unlabeled, labeled, int(budget), generator=ctx.generator)
        info = {"radius_first": float(radii[0]), "radius_last": float(radii[-1]),
                "feature_dim": int(unlabeled.shape[1])}
        return Selection(ctx.unlabeled_ids[picked], None, info)
