"""Splits and the local-folder loaders (CIFAR-10/100, SVHN) on tiny files the tests write."""

import pickle

import numpy as np
import pytest
import torch
from scipy.io import savemat

from influal.core.batching import iterate_batches
from influal.core.errors import ConfigError, DataError
from influal.tasks.classification.datasets import TensorImageDataset, load_dataset, stratified_split


def test_stratified_split_sizes_disjoint_and_proportional():
    labels = np.repeat(np.arange(5), 40)
    a, b, rest = stratified_split(labels, [50, 30], seed=3)
    assert (len(a), len(b), len(rest)) == (50, 30, 120)
    assert len(set(a) | set(b) | set(rest)) == 200
    assert np.bincount(labels[a]).tolist() == [10] * 5
    assert np.bincount(labels[b]).tolist() == [6] * 5
    a2, _, _ = stratified_split(labels, [50, 30], seed=3)
    assert np.array_equal(a, a2)
    a3, _, _ = stratified_split(labels, [50, 30], seed=4)
    assert not np.array_equal(a, a3)


def test_mnist5k_is_shuffled_stratified_and_disjoint():
    splits = load_dataset("mnist5k")
    assert (len(splits.pool), len(splits.val), len(splits.test)) == (3500, 500, 1000)
    assert np.bincount(splits.test.labels.numpy()).tolist() == [100] * 10
    assert np.bincount(splits.val.labels.numpy()).tolist() == [50] * 10
    assert len(set(splits.pool.labels[:20].tolist())) > 3  # not sorted by class any more
    x, _ = splits.pool.get_batch([0, 1])
    assert x.shape == (2, 1, 28, 28) and abs(float(x.mean())) < 2


def _write_cifar(folder, files, label_key, n, classes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name in files:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, label_key: labels}, fh)
        written[name] = (data, labels)
    return written


def test_cifar10_folder_loader(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = _write_cifar(tmp_path / "cifar-10-batches-py", files, "labels", 20, 10)
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    splits = load_dataset("cifar10", str(tmp_path), val_size=10)
    assert (len(splits.pool), len(splits.val), len(splits.test)) == (90, 10, 20)
    assert splits.num_classes == 10 and splits.in_channels == 3
    # the test split is the official test batch, in order, with pixels laid out CHW
    data, labels = written["test_batch"]
    assert torch.equal(splits.test.images[3], torch.from_numpy(data[3].reshape(3, 32, 32)))
    assert splits.test.labels.tolist() == labels
    assert splits.test.classes[2] == "c2"


def test_cifar100_folder_loader_uses_fine_labels(tmp_path):
    _write_cifar(tmp_path / "cifar-100-python", ["train", "test"], "fine_labels", 50, 100)
    splits = load_dataset("cifar100", str(tmp_path / "cifar-100-python"), val_size=5)
    assert (len(splits.pool), len(splits.val), len(splits.test)) == (45, 5, 50)
    assert splits.num_classes == 100


def test_svhn_folder_loader_maps_label_10_to_0(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 12)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)
        savemat(str(tmp_path / f"{split}_32x32.mat"), {"X": x, "y": y})
        if split == "test":
            test_x, test_y = x, y
    splits = load_dataset("svhn", str(tmp_path), val_size=5)
    assert len(splits.test) == 12
    assert splits.test.labels.tolist() == [(i % 10 + 1) % 10 for i in range(12)]
    assert torch.equal(splits.test.images[4], torch.from_numpy(test_x[:, :, :, 4].transpose(2, 0, 1).copy()))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_missing_folder_is_a_data_error(tmp_path, name):
    with pytest.raises(DataError):
        load_dataset(name, str(tmp_path / "nowhere"))
    with pytest.raises(DataError):
        load_dataset(name, str(tmp_path))  # exists but empty
    with pytest.raises(DataError, match="--data-root"):
        load_dataset(name, None)


def test_malformed_cifar_file_is_a_data_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable"):
        load_dataset("cifar10", str(tmp_path))


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown classification dataset"):
        load_dataset("imagenet")


class PlainDataset(torch.utils.data.Dataset):
    """Any Dataset of (tensor, int) pairs works through a DataLoader."""

    def __init__(self, n):
        self.x = torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 3


def test_iterate_batches_on_plain_and_tensor_datasets_agree():
    plain = PlainDataset(7)
    tensor = TensorImageDataset(plain.x, torch.arange(7) % 3, [0.0], [1.0])
    ids = [6, 2, 4, 0, 1]
    a = list(iterate_batches(plain, ids, 2))
    b = list(iterate_batches(tensor, ids, 2))
    assert len(a) == len(b) == 3
    for (ia, xa, ya), (ib, xb, yb) in zip(a, b):
        assert ia.tolist() == ib.tolist()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
