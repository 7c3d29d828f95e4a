"""Loaders for CIFAR-10, CIFAR-100 and SVHN from a local folder in torchvision's on-disk format.

Nothing is ever downloaded. ``root`` may be the folder that holds ``cifar-10-batches-py`` /
``cifar-100-python`` / the SVHN ``.mat`` files, or that folder itself.
"""

from __future__ import annotations

import builtins
import codecs
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


def _numpy_attr(submodule: str, name: str):
    """``numpy._core.<submodule>.<name>`` (numpy 2), else ``numpy.core.<submodule>.<name>`` (numpy 1)."""
    import importlib

    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


_BUILTINS = {name: getattr(builtins, name) for name in
             ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
              "bool")}
# What a CIFAR batch file can refer to: built-in containers and scalars, and numpy's array, dtype and scalar
# reconstruction (under numpy 1's and numpy 2's module names, and Python 2's). Nothing else is ever imported.
_NUMPY = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): (lambda: _numpy_attr("multiarray", "_reconstruct"))
       for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): (lambda: _numpy_attr("multiarray", "scalar"))
       for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): (lambda: _numpy_attr("numeric", "_frombuffer"))
       for core in ("core", "_core")},
    ("_codecs", "encode"): lambda: codecs.encode,  # how Python 3 writes bytes at pickle protocol 2
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The file names a Python object a batch file never holds (so it is not unpickled)."""


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that admits only what CIFAR batch files hold: dicts, lists, strings, numbers, numpy arrays.

    ``pickle.load`` would import and call whatever a file names (``os.system``, ``builtins.open``, ...): a
    crafted ``data_batch_1`` could run code. Here every other global is refused before it is looked up.
    """

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        factory = _NUMPY.get((module, name))
        if factory is None:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return factory()

    def persistent_load(self, pid):
        raise _ForbiddenGlobal("a persistent id")


def _read_pickle(path: Path, title: str) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _BatchUnpickler(fh, encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise DataError(f"{path} is not a {title} batch file: it refers to {exc}, which a batch file never holds "
                        "(influal only reads dicts, lists, strings, numbers and numpy arrays from it); replace it "
                        f"with the original {title} file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's data problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{path} is not a readable {title} batch file ({type(exc).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a {title} batch file (expected a pickled dict)")
    return obj


def _integer_array(value) -> np.ndarray | None:
    """``value`` as a numpy integer array, or None when it is not one (strings, floats, ragged lists)."""
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - a ragged or odd object is simply not an integer array
        return None
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        return None
    return array


def _class_names(value, count: int, path: Path) -> list[str]:
    names = [v.decode("latin1") if isinstance(v, bytes) else v for v in value] \
        if isinstance(value, (list, tuple)) else None
    if names is None or len(names) != count or not all(isinstance(v, str) for v in names):
        raise DataError(f"{path}: expected a list of {count} class names; replace it with the original file or "
                        "delete it (the classes are then numbered)")
    return names


def _read_cifar_files(folder: Path, files: list[str], label_key: str, title: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"missing {path}: a {title} folder in torchvision's format holds {', '.join(files)}")
        batch = _read_pickle(path, title)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path} lacks the keys 'data' and '{label_key}' of a {title} batch file")
        data, batch_labels = _integer_array(batch["data"]), _integer_array(batch[label_key])
        if data is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            shape = "not an integer array" if data is None else f"shape {data.shape}"
            raise DataError(f"{path}: expected 'data' as uint8 pixels of shape [N, 3072], got {shape}")
        if batch_labels is None or batch_labels.ndim != 1 or len(batch_labels) != len(data):
            raise DataError(f"{path}: expected '{label_key}' to be {len(data)} integer labels (one per image)")
        if data.dtype != np.uint8 and len(data) and (data.min() < 0 or data.max() > 255):
            raise DataError(f"{path}: pixels must lie in 0..255, found {int(data.min())}..{int(data.max())}")
        images.append(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32))
        labels.append(batch_labels.astype(np.int64, copy=False))
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
        names = _read_pickle(meta, spec["title"]).get(spec["names_key"])
        classes = None if names is None else _class_names(names, spec["classes"], meta)
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
        if len(y) == 0:
            raise DataError(f"{path} holds no images")
        y = np.where(y == 10, 0, y)
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{path}: labels must lie in 1..10, found {int(y.min())}..{int(y.max())}")
        parts.append((np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y))
    (train_x, train_y), (test_x, test_y) = parts
    return _make_splits("svhn", train_x, train_y, test_x, test_y, 10, CIFAR100_MEAN, CIFAR100_STD,
                        [str(i) for i in range(10)], val_size, test_size, split_seed)


def _make_splits(name, train_x, train_y, test_x, test_y, num_classes, mean, std, classes,
                 val_size, test_size, split_seed) -> DatasetSplits:
    for part, y in (("training", train_y), ("test", test_y)):
        if len(y) == 0:
            raise DataError(f"{name}: the {part} files hold no images")
        if y.min() < 0 or y.max() >= num_classes:
            raise DataError(f"{name}: {part} labels must lie in 0..{num_classes - 1}, found "
                            f"{int(y.min())}..{int(y.max())}")
    val_size = min(2000, len(train_y) // 10) if val_size is None else val_size
    if val_size >= len(train_y):
        raise DataError(f"{name}: validation size {val_size} must be smaller than the {len(train_y)} training images")
    val_ids, pool_ids = stratified_split(train_y, [val_size], seed=split_seed, name=f"{name} training set")
    train = TensorImageDataset(torch.from_numpy(train_x), torch.from_numpy(train_y), mean, std, classes)
    test = TensorImageDataset(torch.from_numpy(test_x), torch.from_numpy(test_y), mean, std, classes)
    if test_size is not None and test_size < len(test):
        (test_ids, _) = stratified_split(test_y, [test_size], seed=split_seed, name=f"{name} test set")
        test = test.subset(np.sort(test_ids))
    return DatasetSplits(name, pool=train.subset(pool_ids), val=train.subset(val_ids), test=test,
                         num_classes=num_classes, in_channels=3, image_size=32)
