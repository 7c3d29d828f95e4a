"""Random selection: the baseline every strategy must beat."""

from __future__ import annotations

import torch

from ..api import Selection, SelectionContext, Strategy, check_budget


class RandomStrategy(Strategy):
    """``budget`` candidates drawn uniformly without replacement from the selection generator."""

    name = "random"
    uses_model = False
    cold_start = True
    shards = True  # nothing to shard: one draw from the shared generator

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        perm = torch.randperm(len(ctx.unlabeled_ids), generator=ctx.generator)[:budget].numpy()
        return Selection(ctx.unlabeled_ids[perm])
