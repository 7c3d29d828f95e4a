"""Datasets: the offline MNIST subset and local-folder loaders; all return :class:`DatasetSplits`."""

from __future__ import annotations

from ..errors import ConfigError
from .base import DatasetSplits, TensorImageDataset, iterate_batches, labels_of, stratified_split

CLASSIFICATION_DATASETS = ("mnist5k", "cifar10", "cifar100", "svhn")


def load_dataset(name: str, root: str | None = None, val_size: int | None = None,
                 test_size: int | None = None) -> DatasetSplits:
    """Load a named classification dataset split into pool / validation / test."""
    if name == "mnist5k":
        from .mnist import load_mnist5k
        return load_mnist5k(val_size, test_size)
    if name in ("cifar10", "cifar100"):
        from .folders import load_cifar
        return load_cifar(name, root, val_size, test_size)
    if name == "svhn":
        from .folders import load_svhn
        return load_svhn(root, val_size, test_size)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(CLASSIFICATION_DATASETS)}")


__all__ = ["CLASSIFICATION_DATASETS", "DatasetSplits", "TensorImageDataset", "iterate_batches", "labels_of",
           "load_dataset", "stratified_split"]
