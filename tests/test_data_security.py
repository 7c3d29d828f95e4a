"""No user file is unpickled: the CIFAR batch reader admits only what batch files hold, weights load as tensors only."""

import ast
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from influal.core.errors import DataError
from influal.tasks.classification.datasets import load_dataset
from influal.tasks.detection.models import load_weights

SRC = Path(__file__).resolve().parents[1] / "src" / "influal"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _System:
    """Unpickled by ``pickle.load``, this runs ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Open:
    """Unpickled by ``pickle.load``, this creates the file ``path`` (``builtins.open(path, "w")``)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


class _Eval:
    """Unpickled by ``pickle.load``, this runs Python code (``builtins.exec``)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def _genuine_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), "labels": (np.arange(n) % 10).tolist()}


def _cifar_folder(root, batches, protocol=pickle.DEFAULT_PROTOCOL):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=protocol))
    return folder


@pytest.mark.parametrize("payload", ["system", "open", "exec", "open-at-top-level"])
def test_a_crafted_cifar_batch_runs_no_code_and_is_a_data_error(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {"system": lambda: _System(f"touch {marker}"), "open": lambda: _Open(str(marker)),
            "exec": lambda: _Eval(str(marker)), "open-at-top-level": lambda: _Open(str(marker))}[payload]()
    batch = evil if payload == "open-at-top-level" else {"data": evil, "labels": [0, 1]}
    batches = {name: _genuine_batch(20, k) for k, name in enumerate(CIFAR10_FILES)}
    batches["data_batch_1"] = batch
    _cifar_folder(tmp_path, batches)
    with pytest.raises(DataError, match="data_batch_1 is not a CIFAR-10 batch file: it refers to") as info:
        load_dataset("cifar10", str(tmp_path), val_size=10)
    assert not marker.exists(), "unpickling the user's file ran its code"
    assert "\n" not in str(info.value)


def _py2_batch_pickle(batch: dict) -> bytes:
    """A dict pickled the way Python 2 wrote the original CIFAR files: protocol 2, byte strings, ``numpy.core``."""
    def s(raw: bytes) -> bytes:
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw

    def i(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    out = bytearray(b"\x80\x02}(")
    for key, value in batch.items():
        out += s(key.encode())
        if isinstance(value, np.ndarray):
            out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
            out += b"(" + i(1) + b"(" + b"".join(i(d) for d in value.shape) + b"t"
            out += b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R(" + i(3) + s(b"|") + b"NNN"
            out += i(-1) + i(-1) + i(0) + b"tb" + b"\x89" + s(value.tobytes()) + b"tb"
        elif isinstance(value, list):
            out += b"](" + b"".join(i(v) if isinstance(v, int) else s(v.encode()) for v in value) + b"e"
        elif isinstance(value, int):
            out += i(value)
        else:
            out += s(value.encode())
    return bytes(out + b"u.")


@pytest.mark.parametrize("style", ["python2", "protocol2", "protocol4", "protocol5"])
def test_genuine_cifar_batches_still_load_in_every_pickle_style(tmp_path, style):
    batches = {name: {"batch_label": f"batch {k}", **_genuine_batch(20, k),
                      "filenames": [f"img{j}.png" for j in range(20)]} for k, name in enumerate(CIFAR10_FILES)}
    meta = {"num_cases_per_batch": 20, "label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}
    if style == "python2":
        files = {name: _py2_batch_pickle(batch) for name, batch in batches.items()}
        files["batches.meta"] = _py2_batch_pickle(meta)
        _cifar_folder(tmp_path, files)
    else:
        _cifar_folder(tmp_path, {**batches, "batches.meta": meta}, protocol=int(style[-1]))
    splits = load_dataset("cifar10", str(tmp_path), val_size=10)
    assert (len(splits.pool), len(splits.val), len(splits.test)) == (90, 10, 20)
    test = batches["test_batch"]
    assert torch.equal(splits.test.images, torch.from_numpy(test["data"].reshape(-1, 3, 32, 32)))
    assert splits.test.labels.tolist() == test["labels"] and splits.test.classes[3] == "c3"


def test_the_cifar_meta_file_is_read_by_the_same_restricted_reader(tmp_path):
    marker = tmp_path / "pwned"
    batches = {name: _genuine_batch(20, k) for k, name in enumerate(CIFAR10_FILES)}
    _cifar_folder(tmp_path, {**batches, "batches.meta": {"label_names": _Open(str(marker))}})
    with pytest.raises(DataError, match="batches.meta is not a CIFAR-10 batch file"):
        load_dataset("cifar10", str(tmp_path), val_size=10)
    assert not marker.exists()


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value,
                                                                                                 ast.Name):
            yield node.func.value.id, node.func.attr, node


def test_no_source_file_unpickles_user_data():
    """Every torch.load passes weights_only=True; nothing calls pickle.load(s) or np.load(allow_pickle=True)."""
    torch_loads = 0
    for path in sorted(SRC.rglob("*.py")):
        for module, attr, call in _calls(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            keywords = {k.arg: k.value for k in call.keywords}
            if (module, attr) == ("torch", "load"):
                torch_loads += 1
                flag = keywords.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, f"{where}: torch.load without " \
                                                                              "weights_only=True"
            assert (module, attr) not in {("pickle", "load"), ("pickle", "loads"), ("dill", "load"),
                                          ("joblib", "load")}, f"{where}: unpickles a file"
            if (module, attr) == ("np", "load") or (module, attr) == ("numpy", "load"):
                flag = keywords.get("allow_pickle")
                assert flag is None or (isinstance(flag, ast.Constant) and flag.value is False), where
    assert torch_loads >= 1  # load_weights


def test_a_weights_file_with_pickled_objects_is_one_line_saying_what_to_do(tmp_path):
    import argparse

    path = tmp_path / "w.pth"
    torch.save({"model": {"backbone.x": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(DataError) as info:
        load_weights(None, path)
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert "argparse.Namespace" in message and "torch.save(model.state_dict(), path)" in message


@pytest.mark.parametrize("content", [b"not a torch file at all", b"", b"PK\x03\x04 truncated zip"])
def test_an_unreadable_weights_file_is_one_line(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot read weights") as info:
        load_weights(None, path)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
