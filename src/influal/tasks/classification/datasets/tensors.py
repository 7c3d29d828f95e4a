"""In-memory image data sets and the stratified pool/validation/test split."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ....core.errors import DataError


class TensorImageDataset(Dataset):
    """Images kept as one uint8 (or float) tensor [N, C, H, W] with integer labels.

    Items come out normalised with the per-channel ``mean`` and ``std`` (given on the 0..255 scale for
    uint8 images). ``get_batch`` returns a whole batch without Python-level collation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 classes: Sequence[str] | None = None):
        if images.ndim != 4:
            raise DataError(f"images must have shape [N, C, H, W], got {tuple(images.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        channels = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def get_batch(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(ids, dtype=torch.long)
        x = (self.images[ids].float() - self.mean) / self.std
        return x, self.labels[ids]

    def __getitem__(self, i: int):
        x, y = self.get_batch([int(i)])
        return x[0], int(y[0])

    def subset(self, ids) -> "TensorImageDataset":
        ids = torch.as_tensor(ids, dtype=torch.long)
        return TensorImageDataset(self.images[ids], self.labels[ids], self.mean.flatten().tolist(),
                                  self.std.flatten().tolist(), self.classes)


def labels_of(dataset: Dataset) -> np.ndarray:
    """All labels of a dataset as an int array, fast for the datasets influal builds."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels.numpy()
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def stratified_split(labels: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Split indices into parts of the given sizes (the rest forms a final part), preserving class proportions.

    Deterministic for a seed. Each class is permuted, then every part takes its share of each class
    (rounded by the largest-remainder method so the part sizes are exact).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if sum(sizes) > n:
        raise DataError(f"cannot take parts of sizes {list(sizes)} from {n} items")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    counts = np.array([len(by_class[c]) for c in classes])
    parts: list[list[np.ndarray]] = []
    offsets = np.zeros(len(classes), dtype=np.int64)
    for size in sizes:
        exact = counts * size / n
        take = np.floor(exact).astype(np.int64)
        remainder = size - take.sum()
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:remainder]] += 1
        take = np.minimum(take, counts - offsets)
        chunk = [by_class[c][offsets[k]:offsets[k] + take[k]] for k, c in enumerate(classes)]
        offsets += take
        parts.append(chunk)
    rest = [by_class[c][offsets[k]:] for k, c in enumerate(classes)]
    parts.append(rest)
    return [rng.permutation(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]
