"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings.

The embedding of an item is the gradient of the cross-entropy, at its own predicted label ŷ, with respect to
the weight W [C, d] of the last linear layer, flattened row-major:

    g = (p - onehot(ŷ)) ⊗ f,    g[c·d + k] = (p_c - [c = ŷ]) · f_k

with p the softmax and f the penultimate features (the last layer's input). The embedding is never
materialised for the pool (C·d floats per item: 10 GB in float32 for CIFAR-100 at 50k): since
‖a⊗f - b⊗h‖² = ‖a‖²‖f‖² + ‖b‖²‖h‖² - 2 (a·b)(f·h), distances are computed from the two factors,
O(n·(C + d)) memory.

Seeding (as the reference implementation ``init_centers``): the first centre is the item with the largest
embedding norm; each next centre is drawn with probability proportional to D², the squared distance to its
nearest centre so far, from the selection generator. Items already chosen are never drawn again.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.introspect import forward_with_features
from .base import Selection, SelectionContext, check_budget


def gradient_factors(model, task, dataset, ids: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, f) for ``ids``: a = p - onehot(argmax p) [n, C] and f = penultimate features [n, d], float64 on CPU."""
    was_training = model.training
    model.eval()
    a_parts, f_parts = [], []
    try:
        with torch.no_grad():
            for _, x, _ in task.batches(dataset, ids, batch_size):
                feats, logits = forward_with_features(model, x)
                probs = F.softmax(logits.double(), dim=1)
                a = probs - F.one_hot(probs.argmax(dim=1), probs.shape[1]).double()
                a_parts.append(a.cpu())
                f_parts.append(feats.double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(a_parts), torch.cat(f_parts)


def badge_embedding(a: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The explicit embeddings [n, C·d] (for small inputs and tests; selection uses the factored form)."""
    return (a[:, :, None] * f[:, None, :]).reshape(len(a), -1)


def factored_sq_distances(a: torch.Tensor, f: torch.Tensor, j: int, norms_sq: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """‖a_i⊗f_i - a_j⊗f_j‖² for every row i, from the factors only (clamped at 0 against rounding)."""
    if norms_sq is None:
        norms_sq = (a * a).sum(dim=1) * (f * f).sum(dim=1)
    return (norms_sq + norms_sq[j] - 2.0 * (a @ a[j]) * (f @ f[j])).clamp_min(0.0)


def kmeans_pp_factored(a: torch.Tensor, f: torch.Tensor, k: int, generator: torch.Generator) -> np.ndarray:
    """k-means++ seeding on the rows of a⊗f without forming them; returns ``k`` distinct row indices."""
    n = len(a)
    norms_sq = (a * a).sum(dim=1) * (f * f).sum(dim=1)

    def sq_dist_to(j: int) -> torch.Tensor:
        return factored_sq_distances(a, f, j, norms_sq)

    first = int(torch.argmax(norms_sq))
    chosen = [first]
    taken = torch.zeros(n, dtype=torch.bool)
    taken[first] = True
    d2 = sq_dist_to(first)
    while len(chosen) < k:
        weights = torch.where(taken, torch.zeros_like(d2), d2)
        if float(weights.sum()) <= 0.0:  # every remaining item coincides with a centre: draw uniformly
            weights = (~taken).double()
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        taken[nxt] = True
        d2 = torch.minimum(d2, sq_dist_to(nxt))
    return np.asarray(chosen, dtype=np.int64)


class BADGEStrategy:
    """Diverse, uncertain batches: k-means++ seeds in the space of last-layer gradient embeddings.

    ``scores`` hold the order of choice (0 for the first seed), so lower is chosen first, as elsewhere.
    """

    name = "badge"

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        batch_size = self.batch_size or getattr(ctx.task, "eval_batch_size", 256)
        a, f = gradient_factors(ctx.model, ctx.task, ctx.pool, ctx.unlabeled_ids, batch_size)
        picked = kmeans_pp_factored(a, f, int(budget), ctx.generator)
        info = {"embedding_dim": int(a.shape[1] * f.shape[1])}
        return Selection(ctx.unlabeled_ids[picked], np.arange(len(picked), dtype=np.float64), info)
