"""The selection kernels strategies share, written once: k-center greedy, k-means++ seeding on factored gradient
embeddings, and Yoo & Kweon's loss-prediction module with its ranking loss."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError


# ---------------------------------------------------------------------------------------------- k-center greedy
def min_distances(points: torch.Tensor, centers: torch.Tensor, row_chunk: int = 1024,
                  col_chunk: int = 16384) -> torch.Tensor:
    """For every row of ``points`` its Euclidean distance to the nearest row of ``centers`` (inf if none).

    Computed over blocks of at most ``row_chunk`` x ``col_chunk`` distances, so memory stays bounded.
    """
    out = torch.full((len(points),), float("inf"), dtype=points.dtype)
    if len(centers) == 0:
        return out
    for i in range(0, len(points), row_chunk):
        block = points[i:i + row_chunk]
        best = out[i:i + row_chunk]
        for j in range(0, len(centers), col_chunk):
            best = torch.minimum(best, torch.cdist(block, centers[j:j + col_chunk]).min(dim=1).values)
        out[i:i + row_chunk] = best
    return out


def k_center_greedy(unlabeled: torch.Tensor, labeled: torch.Tensor | None, budget: int, *,
                    generator: torch.Generator | None = None, row_chunk: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Sener & Savarese): repeatedly take the unlabeled point farthest from every centre.

    The ``labeled`` rows are the initial centres (the official ISAL code's ``greedy_k_center``). Returns the picked
    row indices of ``unlabeled`` in pick order and their distance to the nearest centre when picked. Distances are
    Euclidean in float64; ties go to the lowest index. With no labeled row the first centre is drawn uniformly
    from ``generator`` (row 0 without one).
    """
    unlabeled = unlabeled.double()
    n = len(unlabeled)
    if labeled is not None and len(labeled):
        dist = min_distances(unlabeled, labeled.double(), row_chunk)
    else:
        dist = torch.full((n,), float("inf"), dtype=torch.float64)
    chosen, radii = [], []
    for step in range(budget):
        if step == 0 and bool(torch.isinf(dist).all()):
            idx = int(torch.randint(n, (1,), generator=generator)) if generator is not None else 0
        else:
            idx = int(torch.argmax(dist))
        chosen.append(idx)
        radii.append(float(dist[idx]))
        dist = torch.minimum(dist, torch.cdist(unlabeled, unlabeled[idx:idx + 1]).squeeze(1))
        dist[idx] = -1.0  # never chosen twice, even among duplicates
    return np.asarray(chosen, dtype=np.int64), np.asarray(radii, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- k-means++
def factored_sq_distances(a: torch.Tensor, f: torch.Tensor, j: int, norms_sq: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """‖a_i⊗f_i - a_j⊗f_j‖² for every row i, from the factors only (clamped at 0 against rounding):
    ‖a⊗f - b⊗h‖² = ‖a‖²‖f‖² + ‖b‖²‖h‖² - 2 (a·b)(f·h)."""
    if norms_sq is None:
        norms_sq = (a * a).sum(dim=1) * (f * f).sum(dim=1)
    return (norms_sq + norms_sq[j] - 2.0 * (a @ a[j]) * (f @ f[j])).clamp_min(0.0)


def kmeans_pp_factored(a: torch.Tensor, f: torch.Tensor, k: int, generator: torch.Generator) -> np.ndarray:
    """k-means++ seeding on the rows of a⊗f without forming them; returns ``k`` distinct row indices.

    The first centre is the row of largest norm; each next one is drawn with probability proportional to D², the
    squared distance to its nearest centre so far (BADGE's ``init_centers``). Rows already chosen are never drawn.
    """
    n = len(a)
    norms_sq = (a * a).sum(dim=1) * (f * f).sum(dim=1)
    first = int(torch.argmax(norms_sq))
    chosen = [first]
    taken = torch.zeros(n, dtype=torch.bool)
    taken[first] = True
    d2 = factored_sq_distances(a, f, first, norms_sq)
    while len(chosen) < k:
        weights = torch.where(taken, torch.zeros_like(d2), d2)
        if float(weights.sum()) <= 0.0:  # every remaining item coincides with a centre: draw uniformly
            weights = (~taken).double()
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        taken[nxt] = True
        d2 = torch.minimum(d2, factored_sq_distances(a, f, nxt, norms_sq))
    return np.asarray(chosen, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- loss prediction
def global_pool(x: torch.Tensor) -> torch.Tensor:
    """[n, c, ...] -> [n, c] by averaging every trailing dimension; 2-D inputs pass through."""
    return x.flatten(2).mean(dim=2) if x.ndim > 2 else x


class LossPredictionModule(nn.Module):
    """Yoo & Kweon's loss-prediction module: per feature map GAP -> FC(width) -> ReLU, concatenated -> FC(1).

    ``forward(features)`` takes one tensor per branch ([n, c, ...] maps, or already pooled [n, c]) and returns one
    predicted loss per sample, shape [n].
    """

    def __init__(self, channels: Sequence[int], width: int = 128):
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(c, width) for c in channels)
        self.head = nn.Linear(width * len(channels), 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.branches):
            raise ConfigError(f"loss-prediction module expects {len(self.branches)} feature maps, got {len(features)}")
        hidden = [F.relu(fc(global_pool(x))) for fc, x in zip(self.branches, features)]
        return self.head(torch.cat(hidden, dim=1)).squeeze(1)


def margin_ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """LL4AL's ``LossPredLoss``: pairs (i, n-1-i) for i < n//2; the target losses are detached.

    For each pair, with sign = +1 if l_i > l_j else -1: max(0, margin - sign·(p_i - p_j)), averaged over pairs.
    A batch with fewer than two samples gives 0 (still connected to the graph).
    """
    half = len(predicted) // 2
    if half == 0:
        return predicted.sum() * 0.0
    pred_diff = (predicted - predicted.flip(0))[:half]
    target_diff = (target - target.flip(0))[:half].detach()
    sign = torch.where(target_diff > 0, 1.0, -1.0).to(pred_diff.dtype)
    return torch.clamp(margin - sign * pred_diff, min=0.0).sum() / half
