"""Per-item work of a selection split between torch.distributed ranks.

:func:`per_item` runs ``compute`` on this rank's contiguous shard of the ids and gathers the rows back into the
order of the ids, on every rank: features for core-set, gradient factors for BADGE, probabilities for the
uncertainty strategies, predicted losses for learning loss (ISAL's engine shards its own passes). What follows —
k-center greedy, k-means++ sampling, taking the lowest scores — then runs identically on every rank from the same
rows and the same seeded generator, so the selection is the one of a single process.

A strategy that shards its work says so with ``shards = True``; one that does not computes its whole selection on
every rank (the same result, without the speed-up), and the loop says so when a run starts.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..core import dist


def per_item(ids: np.ndarray, compute: Callable):
    """``compute(ids)`` for all of ``ids``, each rank computing its shard; a tensor (or a tuple of tensors) of rows
    aligned with ``ids``. Fewer ids than ranks: every rank computes them all."""
    ids = np.asarray(ids)
    if not dist.active() or len(ids) < dist.world_size():
        return compute(ids)
    out = compute(dist.shard(ids))
    if isinstance(out, tuple):
        return tuple(dist.gather_rows(part, len(ids)) for part in out)
    return dist.gather_rows(out, len(ids))
