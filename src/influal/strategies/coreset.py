"""Core-set (Sener & Savarese, 2018): k-center greedy on the penultimate features.

As in the official ISAL code (``greedy_k_center``), the greedy starts from the labeled set: every unlabeled
point's distance to its nearest labeled point is computed first, then the point farthest from all centres
is taken, it becomes a centre, and the distances are updated, ``budget`` times. Distances are Euclidean.
Memory stays bounded: the labeled-to-unlabeled distances are computed block by block (``chunk`` rows by
``chunk`` columns), so a 50k pool never needs its full distance matrix.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Selection, SelectionContext, check_budget


def collect_features(model, task, dataset, ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """``task.features`` (the input of the last linear layer) of ``ids``, in eval mode, as one CPU tensor [n, d]."""
    was_training = model.training
    model.eval()
    try:
        out = [task.features(model, x).float().cpu() for _, x, _ in task.batches(dataset, ids, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def min_distances(points: torch.Tensor, centers: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For every row of ``points`` its Euclidean distance to the nearest row of ``centers`` (inf if none).

    Computed over blocks of at most ``chunk`` x ``chunk`` distances, so memory is O(chunk² + n).
    """
    out = torch.full((len(points),), float("inf"), dtype=points.dtype)
    for i in range(0, len(points), chunk):
        block = points[i:i + chunk]
        best = out[i:i + chunk]
        for j in range(0, len(centers), chunk):
            best = torch.minimum(best, torch.cdist(block, centers[j:j + chunk]).min(dim=1).values)
        out[i:i + chunk] = best
    return out


def k_center_greedy(unlabeled: torch.Tensor, labeled: torch.Tensor, budget: int, *, chunk: int = 2048,
                    generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center: ``budget`` row indices of ``unlabeled`` and the distance each had when it was chosen.

    Starts from the ``labeled`` rows as centres. With no labeled rows the first centre is drawn from
    ``generator`` (uniformly). Ties go to the lowest index (``argmax``), so the result is deterministic.
    """
    n = len(unlabeled)
    if labeled is not None and len(labeled):
        dist = min_distances(unlabeled, labeled, chunk)
    else:
        dist = torch.full((n,), float("inf"), dtype=unlabeled.dtype)
    chosen, radii = [], []
    for step in range(budget):
        if step == 0 and torch.isinf(dist).all():
            idx = int(torch.randint(n, (1,), generator=generator)) if generator is not None else 0
        else:
            idx = int(torch.argmax(dist))
        chosen.append(idx)
        radii.append(float(dist[idx]))
        new = (unlabeled - unlabeled[idx]).pow(2).sum(dim=1).sqrt()
        dist = torch.minimum(dist, new)
        dist[idx] = -1.0  # never chosen twice, even among duplicates
    return np.asarray(chosen, dtype=np.int64), np.asarray(radii, dtype=np.float64)


class CoresetStrategy:
    """Core-set selection by k-center greedy on ``task.features`` (penultimate features), from the labeled set.

    ``scores`` are minus the distance to the nearest centre at the time each item was picked (lower = chosen
    earlier = farther from everything already covered).
    """

    name = "coreset"

    def __init__(self, chunk: int = 2048, batch_size: int | None = None):
        self.chunk = chunk
        self.batch_size = batch_size

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        batch_size = self.batch_size or getattr(ctx.task, "eval_batch_size", 256)
        unlabeled = collect_features(ctx.model, ctx.task, ctx.pool, ctx.unlabeled_ids, batch_size)
        labeled = collect_features(ctx.model, ctx.task, ctx.pool, ctx.labeled_ids, batch_size)
        picked, radii = k_center_greedy(unlabeled, labeled, int(budget), chunk=self.chunk, generator=ctx.generator)
        info = {"radius_first": float(radii[0]), "radius_last": float(radii[-1]),
                "feature_dim": int(unlabeled.shape[1])}
        return Selection(ctx.unlabeled_ids[picked], -radii, info)
