"""In-memory image data sets and the stratified pool/validation/test split."""

from __future__ import annotations

import math
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
        if images.ndim != 4 or images.shape[1] < 1:
            raise DataError(f"images must have shape [N, C, H, W] with C >= 1, got {tuple(images.shape)}")
        if labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{len(images)} images but labels of shape {tuple(labels.shape)}; give one label per image")
        if images.is_floating_point() and not bool(torch.isfinite(images).all()):
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            first = int((~torch.isfinite(images)).flatten(1).any(1).nonzero()[0, 0])
            raise DataError(f"{bad} of the {len(images)} images hold NaN or infinite pixels (the first: image "
                            f"{first}); fix or drop them")
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise DataError("labels must be integers (class indices), got fractional values")
        if len(labels) and int(labels.min()) < 0:
            raise DataError(f"labels must be class indices >= 0, found {int(labels.min())}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"images have {channels} channels but mean has {len(mean)} and std {len(std)} values")
        if not all(math.isfinite(float(v)) for v in list(mean) + list(std)) or min(float(v) for v in std) <= 0:
            raise DataError(f"mean {list(mean)} and std {list(std)} must be finite, and std > 0")
        self.images = images
        self.labels = labels.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """A hash of every image, label and the normalisation (recorded in config.json's provenance)."""
        import hashlib

        h = hashlib.blake2b(digest_size=8)
        for t in (self.images, self.labels, self.mean, self.std):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

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
    """All labels of a dataset as an int array, fast for the datasets influal builds (and for any data set with a
    one-dimensional ``labels`` tensor of one label per item, such as :class:`ImageFileDataset`)."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels.numpy()
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor) and labels.ndim == 1 and len(labels) == len(dataset):
        return labels.long().numpy()
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def stratified_split(labels: np.ndarray, sizes: Sequence[int], seed: int, *, name: str = "the data set"
                     ) -> list[np.ndarray]:
    """Split indices into parts of the given sizes (the rest forms a final part), preserving class proportions.

    Deterministic for a seed. Each class is permuted, then every part takes its share of each class
    (rounded by the largest-remainder method so the part sizes are exact). Labels of a single class are refused
    (a classifier has nothing to learn from them, and a wrong label column is the usual cause); ``name`` says
    which data the error is about.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if any(int(size) < 0 for size in sizes):
        raise DataError(f"cannot take parts of negative size {list(sizes)} from {name}")
    if sum(sizes) > n:
        raise DataError(f"cannot take parts of sizes {list(sizes)} from {n} items")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if n and len(classes) < 2:
        raise DataError(f"all {n} labels of {name} are {classes[0].item()!r}: a classification data set needs at "
                        "least two classes; check the label files")
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
