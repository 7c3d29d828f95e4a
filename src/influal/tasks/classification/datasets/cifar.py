"""Loaders for CIFAR-10, CIFAR-100 and SVHN from a local folder in torchvision's on-disk format.

Nothing is ever downloaded. ``root`` may be the folder that holds ``cifar-10-batches-py`` /
``cifar-100-python`` / the SVHN ``.mat`` files, or that folder itself.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ....api import DatasetSplits
from ....core.errors import DataError
from .tensors import TensorImageDataset, stratified_split

CIFAR10_MEAN, CIFAR10_STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
CIFAR100_MEAN, CIFAR100_STD = (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    label_key="labels", meta="batches.meta", names_key="label_names", classes=10,
                    mean=CIFAR10_MEAN, std=CIFAR10_STD, title="CIFAR-10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], label_key="fine_labels",
                     meta="meta", names_key="fine_label_names", classes=100,
                     mean=CIFAR100_MEAN, std=CIFAR100_STD, title="CIFAR-100"),
}


def _require_root(root: str | None, title: str) -> Path:
    if root is None:
        raise DataError(f"{title} needs --data-root pointing at a local copy (influal never downloads data)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"--data-root {root} is not a folder; point it at your local {title} copy")
    return path


def _read_pickle(path: Path, title: str) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's data problem
        raise DataError(f"{path} is not a readable {title} batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a {title} batch file (expected a pickled dict)")
    return obj


def _read_cifar_files(folder: Path, files: list[str], label_key: str, title: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"missing {path}: a {title} folder in torchvision's format holds {', '.join(files)}")
        batch = _read_pickle(path, title)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path} lacks the keys 'data' and '{label_key}' of a {title} batch file")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[label_key]):
            raise DataError(f"{path}: expected 'data' of shape [N, 3072] with N labels, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar(name: str, root: str | None, val_size: int | None = None, test_size: int | None = None,
               split_seed: int = 0) -> DatasetSplits:
    """CIFAR-10 or CIFAR-100: pool = train minus a stratified validation split; test = the official test set."""
    spec = _CIFAR[name]
    base = _require_root(root, spec["title"])
    folder = base / spec["folder"] if (base / spec["folder"]).is_dir() else base
    if not any((folder / f).exists() for f in spec["train"] + spec["test"]):
        raise DataError(f"no {spec['title']} under {base}: expected {base / spec['folder']} holding "
                        f"{', '.join(spec['train'] + spec['test'])} (torchvision's format)")
    train_x, train_y = _read_cifar_files(folder, spec["train"], spec["label_key"], spec["title"])
    test_x, test_y = _read_cifar_files(folder, spec["test"], spec["label_key"], spec["title"])
    classes = None
    meta = folder / spec["meta"]
    if meta.is_file():
        classes = _read_pickle(meta, spec["title"]).get(spec["names_key"])
    return _make_splits(name, train_x, train_y, test_x, test_y, spec["classes"], spec["mean"], spec["std"],
                        classes, val_size, test_size, split_seed)


def load_svhn(root: str | None, val_size: int | None = None, test_size: int | None = None,
              split_seed: int = 0) -> DatasetSplits:
    """SVHN from ``train_32x32.mat`` and ``test_32x32.mat``; label 10 means digit 0 (as torchvision)."""
    from scipy.io import loadmat

    base = _require_root(root, "SVHN")
    folder = base / "svhn" if (base / "svhn" / "train_32x32.mat").is_file() else base
    parts = []
    for split in ("train", "test"):
        path = folder / f"{split}_32x32.mat"
        if not path.is_file():
            raise DataError(f"missing {path}: an SVHN folder in torchvision's format holds train_32x32.mat "
                            "and test_32x32.mat")
        try:
            mat = loadmat(str(path))
            x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path} is not a readable SVHN .mat file with 'X' and 'y' ({exc})") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise DataError(f"{path}: expected X of shape [32, 32, 3, N] and N labels, got {x.shape}")
        y = np.where(y == 10, 0, y)
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{path}: labels must lie in 1..10, found {int(y.min())}..{int(y.max())}")
        parts.append((np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y))
    (train_x, train_y), (test_x, test_y) = parts
    return _make_splits("svhn", train_x, train_y, test_x, test_y, 10, CIFAR100_MEAN, CIFAR100_STD,
                        [str(i) for i in range(10)], val_size, test_size, split_seed)


def _make_splits(name, train_x, train_y, test_x, test_y, num_classes, mean, std, classes,
                 val_size, test_size, split_seed) -> DatasetSplits:
    if train_y.min() < 0 or train_y.max() >= num_classes:
        raise DataError(f"{name}: labels must lie in 0..{num_classes - 1}")
    val_size = min(2000, len(train_y) // 10) if val_size is None else val_size
    if val_size >= len(train_y):
        raise DataError(f"{name}: validation size {val_size} must be smaller than the {len(train_y)} training images")
    val_ids, pool_ids = stratified_split(train_y, [val_size], seed=split_seed)
    train = TensorImageDataset(torch.from_numpy(train_x), torch.from_numpy(train_y), mean, std, classes)
    test = TensorImageDataset(torch.from_numpy(test_x), torch.from_numpy(test_y), mean, std, classes)
    if test_size is not None and test_size < len(test):
        (test_ids, _) = stratified_split(test_y, [test_size], seed=split_seed)
        test = test.subset(np.sort(test_ids))
    return DatasetSplits(name, pool=train.subset(pool_ids), val=train.subset(val_ids), test=test,
                         num_classes=num_classes, in_channels=3, image_size=32)
