"""The one batching path: ``(ids, inputs, targets)`` batches of any data set restricted to some ids."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset


def iterate_batches(dataset: Dataset, ids: Sequence[int] | np.ndarray | torch.Tensor, batch_size: int,
                    *, shuffle: bool = False, generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, Any, Any]]:
    """Yield ``(ids, inputs, targets)`` batches of ``dataset`` restricted to ``ids`` (in order, or shuffled by
    ``generator``).

    A data set with ``get_batch(ids) -> (inputs, targets)`` is indexed directly (influal's own data sets: a
    stacked tensor for images, lists for detection); any other ``Dataset`` of ``(input, target)`` pairs goes
    through a ``DataLoader`` with the default collation. ``drop_last`` drops a final short batch, unless that
    would leave nothing.
    """
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if shuffle:
        ids = ids[torch.randperm(len(ids), generator=generator)]
    n = len(ids)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    if hasattr(dataset, "get_batch"):
        for start in range(0, stop, batch_size):
            batch_ids = ids[start:start + batch_size]
            x, y = dataset.get_batch(batch_ids)
            yield batch_ids, x, y
        return
    loader = DataLoader(Subset(dataset, ids[:stop].tolist()), batch_size=batch_size, shuffle=False)
    start = 0
    for x, y in loader:
        batch_ids = ids[start:start + len(x)]
        start += len(x)
        yield batch_ids, x, torch.as_tensor(y).long() if not isinstance(y, (list, dict)) else y
