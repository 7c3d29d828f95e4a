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

from ..api import CLASSIFIER_HEAD, Selection, SelectionContext, Strategy, check_budget
from ..core.torch_utils import eval_mode
from .kernels import kmeans_pp_factored
from .sharding import per_item


def gradient_factors(model, task, dataset, ids: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, f) for ``ids``: a = p - onehot(argmax p) [n, C] and f = penultimate features [n, d], float64 on CPU."""
    a_parts, f_parts = [], []
    with eval_mode(model), torch.no_grad():
        for _, x, _ in task.batches(dataset, ids, batch_size):
            feats, logits = task.features_and_logits(model, x)
            probs = F.softmax(logits.double(), dim=1)
            a = probs - F.one_hot(probs.argmax(dim=1), probs.shape[1]).double()
            a_parts.append(a.cpu())
            f_parts.append(feats.double().cpu())
    return torch.cat(a_parts), torch.cat(f_parts)


def badge_embedding(a: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The explicit embeddings [n, C·d] (for small inputs and tests; selection uses the factored form)."""
    return (a[:, :, None] * f[:, None, :]).reshape(len(a), -1)


class BADGEStrategy(Strategy):
    """Diverse, uncertain batches: k-means++ seeds in the space of last-layer gradient embeddings.

    No scores (the batch is sampled); ``ids`` are in the order the seeds were drawn.
    """

    name = "badge"
    requires = frozenset({CLASSIFIER_HEAD})
    shards = True

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        batch_size = self.batch_size or ctx.task.eval_batch_size
        a, f = per_item(ctx.unlabeled_ids, lambda ids: gradient_factors(ctx.model, ctx.task, ctx.pool, ids,
                                                                        batch_size))
        picked = kmeans_pp_factored(a, f, int(budget), ctx.generator)
        info = {"embedding_dim": int(a.shape[1] * f.shape[1])}
        return Selection(ctx.unlabeled_ids[picked], None, info)
