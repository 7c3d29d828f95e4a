"""Random selection: the baseline every strategy must beat."""

from __future__ import annotations

import torch

from .base import Selection, SelectionContext, check_budget


class RandomStrategy:
    name = "random"

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        perm = torch.randperm(len(ctx.unlabeled_ids), generator=ctx.generator)[:budget].numpy()
        return Selection(ctx.unlabeled_ids[perm])
