"""A catalogue of bad inputs: each gives one clear line on stderr and exit status 2 (or, through the Python API, the
documented exception), and leaves every file under the test's folder byte for byte as it was: nothing is written
before everything that can be checked has been checked."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from influal.cli import main

from detection_utils import SPEC

FAST = ["--epochs", "1", "--initial", "20", "--budget", "10", "--rounds", "2", "--seeds", "1", "--val-size", "50",
        "--test-size", "100", "--quiet"]
DET = ["--task", "detection", "--image-size", "48", "--val-size", "2", "--test-size", "3", "--initial", "4",
       "--budget", "2", "--rounds", "2", "--seeds", "1", "--epochs", "1", "--quiet"]


# ---- data the cases start from -----------------------------------------------------------------------------------

def _coco_root(tmp: Path) -> Path:
    """A small COCO folder (train.json, test.json, PNGs) cut from the digit canvas."""
    from influal.tasks.detection.datasets.canvas import write_digit_canvas

    root = write_digit_canvas(tmp / "coco", SPEC)
    shutil.copy(root / "pool.json", root / "train.json")
    return root


def _corrupt_coco(change):
    def setup(tmp: Path) -> list[str]:
        root = _coco_root(tmp)
        data = json.loads((root / "train.json").read_text())
        change(data, root)
        (root / "train.json").write_text(json.dumps(data))
        return DET + ["--dataset", "coco", "--data-root", str(root)]
    return setup


def _voc_root(tmp: Path, box=("1", "2", "10", "12"), difficult="0") -> Path:
    from PIL import Image

    root = tmp / "VOC"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = ["a", "b", "c", "d", "e", "f"]
    for stem in ids:
        Image.fromarray(np.full((20, 20, 3), 128, dtype=np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        x0, y0, x1, y1 = box
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>20</width><height>20</height></size>"
            f"<object><name>dog</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids[:4]))
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[4:]))
    return root


def _voc(**kw):
    def setup(tmp):
        return DET + ["--dataset", "voc", "--data-root", str(_voc_root(tmp, **kw)), "--val-size", "1"]
    return setup


def _cifar_root(tmp: Path, payload=None) -> Path:
    root = tmp / "cifar" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        with open(root / name, "wb") as fh:
            pickle.dump(payload if (payload is not None and name == "data_batch_1") else batch, fh)
    return root.parent


class _Explode:
    """A pickle payload that would create a file when unpickled."""

    target = ""

    def __reduce__(self):
        return (open, (self.target, "w"))


def _crafted_cifar(tmp):
    payload = _Explode()
    _Explode.target = str(tmp / "PWNED")
    root = _cifar_root(tmp, payload)
    return ["--dataset", "cifar10", "--data-root", str(root), *FAST]


def _existing(config_text: str):
    def setup(tmp):
        (tmp / "out").mkdir()
        (tmp / "out" / "config.json").write_text(config_text)
        return FAST
    return setup


def _finished_then(*extra):
    """A finished tiny run in out/, then the same command with ``extra`` changed."""
    def setup(tmp):
        argv = ["run", "--dataset", "mnist5k", "--strategies", "random", *FAST, "--out", str(tmp / "out")]
        assert main(argv) == 0
        return ["--strategies", "random", *FAST, *extra]
    return setup


def _metrics_csv(content: bytes):
    def setup(tmp):
        out = tmp / "out"
        out.mkdir()
        (out / "metrics.csv").write_bytes(content)
        return None  # the report command is given in the case
    return setup


def _file(tmp):
    (tmp / "out").write_text("not a folder")
    return FAST


def _under_file(tmp):
    (tmp / "afile").write_text("x")
    return FAST


def _weights(content: bytes | None):
    def setup(tmp):
        root = _coco_root(tmp)
        args = DET + ["--dataset", "coco", "--data-root", str(root)]
        if content is None:
            return args + ["--weights", str(tmp / "missing.pth")]
        (tmp / "w.pth").write_bytes(content)
        return args + ["--weights", str(tmp / "w.pth")]
    return setup


def _first_image(data):
    return data["images"][0]


def _first_ann(data):
    return data["annotations"][0]


# ---- the catalogue: (id, argv after "run" or a setup returning it, out folder, expected words) ---------------------
CASES = [
    ("unknown-dataset", ["--dataset", "imagenet", *FAST], "out", "unknown classification dataset"),
    ("unknown-model", ["--model", "vgg", *FAST], "out", "unknown classification model"),
    ("unknown-strategy", ["--strategies", "isal,psychic", *FAST], "out", "unknown strategy 'psychic'"),
    ("strategy-twice", ["--strategies", "isal,isal", *FAST], "out", "lists a name twice"),
    ("budget-too-large", ["--budget", "9000", "--epochs", "1", "--quiet"], "out", "exceeds the pool"),
    ("initial-too-large", ["--initial", "9000", "--epochs", "1", "--quiet"], "out", "exceeds the pool"),
    ("zero-rounds", [*FAST, "--rounds", "0"], "out", "rounds must be an integer >= 1"),
    ("zero-seeds", [*FAST, "--seeds", "0"], "out", "seeds must be an integer >= 1"),
    ("huge-seeds", [*FAST, "--seeds", str(10 ** 12)], "out", "seeds must be at most"),
    ("negative-first-seed", [*FAST, "--first-seed", "-1"], "out", "first_seed must be an integer >= 0"),
    ("rounds-not-int", [*FAST, "--rounds", "True"], "out", "invalid int value"),
    ("nan-lr", [*FAST, "--lr", "nan"], "out", "train.lr must be a finite number"),
    ("inf-lr", [*FAST, "--lr", "inf"], "out", "train.lr must be a finite number"),
    ("negative-lr", [*FAST, "--lr", "-1"], "out", "train.lr must be a finite number > 0"),
    ("zero-epochs", [*FAST, "--epochs", "0"], "out", "train.epochs must be an integer >= 1"),
    ("zero-batch", [*FAST, "--batch-size", "0"], "out", "train.batch_size must be an integer >= 1"),
    ("bad-augment", [*FAST, "--augment", "mixup"], "out", "train.augment must be one of"),
    ("nan-damping", [*FAST, "--damping", "nan"], "out", "influence.damping must be a finite number"),
    ("inf-damping", [*FAST, "--damping", "inf"], "out", "influence.damping must be a finite number"),
    ("bad-solver", [*FAST, "--solver", "magic"], "out", "influence.solver must be one of"),
    ("bad-scope", [*FAST, "--scope", "everything"], "out", "influence.scope must be one of"),
    ("influence-without-isal", ["--strategies", "random", "--damping", "0.1", *FAST], "out",
     "no ISAL strategy is among --strategies"),
    ("option-format", [*FAST, "--strategy-option", "bald"], "out", "expected STRATEGY.SETTING=VALUE"),
    ("option-not-listed", [*FAST, "--strategy-option", "bald.samples=4"], "out", "'bald' is not among --strategies"),
    ("option-unknown-setting", ["--strategies", "bald", *FAST, "--strategy-option", "bald.temperature=3"], "out",
     "does not take the setting"),
    ("option-bad-value", ["--strategies", "bald", *FAST, "--strategy-option", "bald.samples=1"], "out",
     "MC samples >= 2"),
    ("unknown-task", [*FAST, "--task", "segmentation"], "out", "unknown task 'segmentation'"),
    ("flag-of-another-task", [*FAST, "--backbone", "tiny"], "out", "--backbone only apply to --task detection"),
    ("label-smoothing-too-large", [*FAST, "--label-smoothing", "1.5"], "out", "label_smoothing must lie in [0, 1)"),
    ("stop-at-too-large", [*FAST, "--stop-at", "250"], "out", "stop_at must lie in (0, 1]"),
    ("no-gpu", [*FAST, "--device", "cuda"] if not torch.cuda.is_available() else [*FAST, "--device", "cuda:99"],
     "out", "cuda"),
    ("unknown-device", [*FAST, "--device", "tpu"], "out", "unknown device 'tpu'"),
    ("unknown-preset", ["--preset", "imagenet", *FAST], "out", "unknown preset 'imagenet'"),
    ("preset-needs-data", ["--preset", "cifar10", *FAST], "out", "needs --data-root"),
    ("unknown-train-preset", ["--train-preset", "slow", *FAST], "out", "unknown training preset 'slow'"),
    ("unknown-influence-preset", ["--influence-preset", "magic", *FAST], "out", "unknown influence preset"),
    ("zero-val-size", [*FAST, "--val-size", "0"], "out", "val_size must be an integer >= 1"),
    ("cifar-without-root", ["--dataset", "cifar10", *FAST], "out", "needs --data-root"),
    ("cifar-missing-root", ["--dataset", "cifar10", "--data-root", "/nonexistent/cifar", *FAST], "out",
     "is not a folder"),
    ("cifar-empty-root", lambda tmp: (tmp / "empty").mkdir() or ["--dataset", "cifar10", "--data-root",
                                                                  str(tmp / "empty"), *FAST], "out", "no CIFAR-10"),
    ("cifar-crafted-pickle", _crafted_cifar, "out", "CIFAR-10"),
    ("svhn-without-root", ["--dataset", "svhn", *FAST], "out", "needs --data-root"),
    ("out-is-a-file", _file, "out", "is a file, not a folder"),
    ("out-under-a-file", _under_file, "afile/out", "which is a file"),
    ("out-in-proc", [*FAST], "/proc/influal-out", "system folder"),
    ("out-not-empty", lambda tmp: (tmp / "out").mkdir() or (tmp / "out" / "notes.txt").write_text("x") and FAST,
     "out", "not empty and holds no influal config.json"),
    ("out-config-null", _existing("null"), "out", "is not an influal config"),
    ("out-config-list", _existing("[]"), "out", "is not an influal config"),
    ("out-config-broken", _existing('{"task": '), "out", "is not valid JSON"),
    ("out-config-unknown-field", _existing('{"version": 2, "colour": "blue"}'), "out", "cannot be read"),
    ("out-other-experiment", _finished_then("--lr", "0.2"), "out", "train.lr is 0.05 there and 0.2 here"),
    ("out-other-dataset-size", _finished_then("--test-size", "99"), "out", "test_size is 100 there and 99 here"),
    ("detection-augment", [*DET, "--augment", "flip_crop"], "out", "augment none only"),
    ("detection-entropy", [*DET, "--strategies", "entropy"], "out", "needs probabilities"),
    ("detection-scope-last", [*DET, "--strategies", "isal", "--scope", "last"], "out", "scope 'last'"),
    ("classification-localization-stability", ["--strategies", "localization_stability", *FAST], "out",
     "needs detections"),
    ("detection-unknown-family", [*DET, "--model", "yolo"], "out", "unknown detector family 'yolo'"),
    ("detection-small-image", [*DET, "--image-size", "16"], "out", "image_size must be >= 32"),
    ("detection-score-threshold", [*DET, "--score-threshold", "2"], "out", "score_threshold must lie in [0, 1]"),
    ("detection-max-digits", [*DET, "--max-digits", "0"], "out", "max_digits must be an integer >= 1"),
    ("detection-bad-backbone", [*DET, "--backbone", "vit"], "out", "detection.backbone must be one of"),
    ("detector-and-model-disagree", [*DET, "--detector", "fcos", "--model", "fasterrcnn"], "out", "disagree"),
    ("coco-without-root", [*DET, "--dataset", "coco"], "out", "needs --data-root"),
    ("coco-missing-json", lambda tmp: (tmp / "nojson").mkdir() or [*DET, "--dataset", "coco", "--data-root",
                                                                    str(tmp / "nojson")], "out", "does not exist"),
    ("coco-escaping-file-name", _corrupt_coco(lambda d, r: _first_image(d).update(file_name="../../etc/passwd")),
     "out", "outside"),
    ("coco-absolute-file-name", _corrupt_coco(lambda d, r: _first_image(d).update(file_name="/etc/passwd")), "out",
     "outside"),
    ("coco-missing-image", _corrupt_coco(lambda d, r: _first_image(d).update(file_name="images/pool/none.png")),
     "out", "none.png"),
    ("coco-undecodable-image", _corrupt_coco(lambda d, r: (r / _first_image(d)["file_name"]).write_bytes(b"\x89PNG junk")),
     "out", "cannot read image"),
    ("coco-undecodable-later-image", _corrupt_coco(lambda d, r: (r / d["images"][-1]["file_name"]).write_bytes(
        (r / d["images"][-1]["file_name"]).read_bytes()[:60])), "out", "cannot be read as images"),
    ("coco-zero-width-box", _corrupt_coco(lambda d, r: _first_ann(d).update(bbox=[1, 1, 0, 5])), "out", "annotation"),
    ("coco-negative-box", _corrupt_coco(lambda d, r: _first_ann(d).update(bbox=[1, 1, -3, 5])), "out", "annotation"),
    ("coco-nan-box", _corrupt_coco(lambda d, r: _first_ann(d).update(bbox=[1, 1, float("nan"), 5])), "out",
     "annotation"),
    ("coco-box-outside", _corrupt_coco(lambda d, r: _first_ann(d).update(bbox=[40, 40, 30, 30])), "out", "outside"),
    ("coco-three-number-box", _corrupt_coco(lambda d, r: _first_ann(d).update(bbox=[1, 2, 3])), "out", "bbox"),
    ("coco-annotation-without-bbox", _corrupt_coco(lambda d, r: _first_ann(d).pop("bbox")), "out", "bbox"),
    ("coco-string-image-id", _corrupt_coco(lambda d, r: _first_image(d).update(id="first")), "out", "id"),
    ("coco-image-without-file-name", _corrupt_coco(lambda d, r: _first_image(d).pop("file_name")), "out",
     "file_name"),
    ("coco-unknown-category", _corrupt_coco(lambda d, r: _first_ann(d).update(category_id=999)), "out", "999"),
    ("coco-duplicate-image-ids", _corrupt_coco(lambda d, r: d["images"][1].update(id=d["images"][0]["id"])), "out",
     "not unique"),
    ("coco-no-categories", _corrupt_coco(lambda d, r: d.update(categories=[])), "out", "categories"),
    ("voc-non-numeric-box", _voc(box=("abc", "2", "10", "12")), "out", ".xml"),
    ("voc-difficult-yes", _voc(difficult="yes"), "out", ".xml"),
    ("voc-inverted-box", _voc(box=("10", "2", "1", "12")), "out", ".xml"),
    ("voc-missing-image-set", lambda tmp: (tmp / "voc-empty").mkdir() or [*DET, "--dataset", "voc", "--data-root",
                                                                           str(tmp / "voc-empty")], "out",
     "does not exist"),
    ("weights-missing", _weights(None), "out", "does not exist"),
    ("weights-not-a-state-dict", _weights(b"definitely not torch"), "out", "cannot read weights"),
]

REPORT_CASES = [
    ("report-no-metrics", lambda tmp: (tmp / "out").mkdir() or None, ["report", "{out}"], "does not exist"),
    ("report-binary-metrics", _metrics_csv(b"\xff\xfe\x00garbage"), ["report", "{out}"], "is not a metrics.csv"),
    ("check-influence-no-config", lambda tmp: (tmp / "out").mkdir() or None, ["check-influence", "{out}"],
     "holds no config.json"),
    ("check-influence-unknown-solver", lambda tmp: None, ["check-influence", "--solvers", "newton"],
     "unknown solver"),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the test's folder, but the cache of generated offline data sets (INFLUAL_DATA=cache)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(root.rglob("*")) if p.relative_to(root).parts[0] != "cache"}


def _check_refusal(capsys, argv, expected, tmp_path, before):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("influal: error:"), err
    assert expected in err, err
    assert _snapshot(tmp_path) == before


def test_the_catalogue_holds_at_least_sixty_bad_inputs():
    assert len(CASES) + len(REPORT_CASES) >= 60
    assert len({c[0] for c in CASES + REPORT_CASES}) == len(CASES) + len(REPORT_CASES)


@pytest.mark.parametrize("name, argv, out, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, name, argv, out,
                                                            expected):
    monkeypatch.setenv("INFLUAL_DATA", str(tmp_path / "cache"))
    extra = argv(tmp_path) if callable(argv) else list(argv)
    capsys.readouterr()
    out_path = Path(out) if out.startswith("/") else tmp_path / out
    before = _snapshot(tmp_path)
    _check_refusal(capsys, ["run", *extra, "--out", str(out_path)], expected, tmp_path, before)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name, setup, argv, expected", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_bad_report_and_check_input_is_refused_in_one_line(tmp_path, capsys, name, setup, argv, expected):
    setup(tmp_path)
    before = _snapshot(tmp_path)
    _check_refusal(capsys, [a.replace("{out}", str(tmp_path / "out")) for a in argv], expected, tmp_path, before)


# ---- the Python API: the documented exceptions, before anything is written --------------------------------------

def _api_case(tmp_path, splits, factory, exc, match):
    from influal import ExperimentConfig, run_experiment

    config = ExperimentConfig(strategies=("random", "isal"), initial=6, budget=4, rounds=2, seeds=1, device="cpu")
    with pytest.raises(exc, match=match):
        run_experiment(config, tmp_path / "out", splits=splits, model_factory=factory)
    assert not (tmp_path / "out").exists()


def test_api_refuses_a_model_with_the_wrong_number_of_outputs(tmp_path):
    from influal.core.errors import DataError

    from conftest import blob_splits

    _api_case(tmp_path, blob_splits(), lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 5)),
              DataError, "must output \\[n, 3\\] logits")


def test_api_refuses_inputs_the_model_cannot_take(tmp_path):
    from influal.core.errors import DataError

    from conftest import blob_splits

    _api_case(tmp_path, blob_splits(), lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)),
              DataError, "cannot process inputs of shape \\(1, 6, 6\\)")


def test_api_refuses_labels_beyond_the_classes_one_class_and_empty_splits(tmp_path):
    from influal.api import DatasetSplits
    from influal.core.errors import DataError
    from influal.tasks.classification import TensorImageDataset

    from conftest import blob_splits, mlp_model

    base = blob_splits()
    bad_labels = TensorImageDataset(base.pool.images, base.pool.labels + 5, [128.0], [64.0])
    splits = DatasetSplits("blobs", pool=bad_labels, val=base.val, test=base.test, num_classes=3, in_channels=1,
                           image_size=6)
    _api_case(tmp_path, splits, mlp_model, DataError, "labels")
    one = TensorImageDataset(base.pool.images, torch.zeros_like(base.pool.labels), [128.0], [64.0])
    splits = DatasetSplits("blobs", pool=one, val=base.val, test=base.test, num_classes=3, in_channels=1,
                           image_size=6)
    _api_case(tmp_path, splits, mlp_model, DataError, "single class")
    empty = base.test.subset(np.zeros(0, dtype=np.int64))
    splits = DatasetSplits("blobs", pool=base.pool, val=base.val, test=empty, num_classes=3, in_channels=1,
                           image_size=6)
    _api_case(tmp_path, splits, mlp_model, DataError, "test split of blobs is empty")


def test_a_full_disk_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import errno

    import influal.core.io as io

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "atomic_write_bytes", full)
    code = main(["run", "--dataset", "mnist5k", "--strategies", "random", *FAST, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("influal: error: No space left on device")


def test_api_refuses_booleans_and_nan_where_numbers_belong():
    from influal import ConfigError, ExperimentConfig, TrainConfig

    with pytest.raises(ConfigError, match="rounds must be an integer"):
        ExperimentConfig(rounds=True)
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="strategies must be a list"):
        ExperimentConfig(strategies="isal")
