"""One's own data: image folders and csv files for classification, COCO trees with separate paths for detection."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detection_utils import SPEC, one_thread
from PIL import Image

from influal.cli import main
from influal.core.errors import ConfigError, DataError, DataWarning
from influal.loop.config import ExperimentConfig
from influal.tasks import get_task
from influal.tasks.classification.datasets import DATASETS, ImageFileDataset, labels_of, read_image
from influal.tasks.classification.datasets.files import image_stats
from influal.tasks.detection.datasets.canvas import write_digit_canvas
from influal.tasks.detection.settings import DetectionSettings


def _image(path: Path, size=(8, 8), mode="L", seed=0, value=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode in ("L", "I;16") else (size[1], size[0], 3)
    dtype = np.uint16 if mode == "I;16" else np.uint8
    array = rng.integers(0, 65535 if mode == "I;16" else 255, shape, dtype=dtype) if value is None \
        else np.full(shape, value, dtype=dtype)
    Image.fromarray(array).save(path)
    return path


def _folder(root: Path, counts: dict[str, int], seed=0, **kw) -> Path:
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _image(root / name / f"{i:03d}.png", seed=seed + 100 * k + i, **kw)
    return root


def _load(name, root, val_size=None, test_size=None):
    return DATASETS.build(name, SimpleNamespace(dataset=name, data_root=None if root is None else str(root),
                                                val_size=val_size, test_size=test_size))


def _labels_match_paths(ds, classes, folder_of=lambda p: p.split("/")[-2]):
    return all(classes[int(y)] == folder_of(p) for p, y in zip(ds.paths, ds.labels))


# ---------------------------------------------------------------------------------------------- imagefolder
def test_imagefolder_reads_sorted_class_folders_into_a_stratified_seeded_split(tmp_path):
    root = _folder(tmp_path / "data", {"cat": 10, "ant": 10, "bee": 10})
    _image(root / "bee" / "deeper" / "x.PNG", seed=7)  # below a class folder, any case of extension
    _image(root / "ant" / ".hidden.png")               # skipped
    (root / "ant" / "notes.txt").write_text("not an image")  # skipped
    (root / ".cache").mkdir()                          # a hidden folder is no class
    splits = _load("imagefolder", root)
    assert splits.num_classes == 3 and splits.in_channels == 1 and splits.image_size == 8
    classes = splits.pool.classes
    assert classes == ["ant", "bee", "cat"]
    parts = [splits.pool, splits.val, splits.test]
    assert [len(p) for p in parts] == [22, 3, 6]  # test 20 %, reference 10 %, the rest the pool
    everything = sorted(p for part in parts for p in part.paths)
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.suffix.lower() == ".png" and not p.name.startswith("."))
    assert everything == expected and len(set(everything)) == 31
    assert all(_labels_match_paths(p, classes, lambda q: q.split("/")[0]) for p in parts)
    assert sorted(labels_of(splits.test).tolist()) == [0, 0, 1, 1, 2, 2]  # stratified
    assert splits.pool.paths == sorted(splits.pool.paths)  # the listing's order
    again = _load("imagefolder", root)
    assert again.pool.paths == splits.pool.paths and again.pool.fingerprint() == splits.pool.fingerprint()
    smaller = _load("imagefolder", root, val_size=2, test_size=4)
    assert (len(smaller.val), len(smaller.test)) == (2, 4)


def test_color_and_size_rules(tmp_path):
    rgb = _folder(tmp_path / "rgb", {"a": 3, "b": 3}, mode="RGB", size=(10, 10))
    _image(rgb / "a" / "gray.png", size=(12, 12))  # one grayscale image of another size: still RGB, side 10
    splits = _load("imagefolder", rgb, val_size=1, test_size=1)
    assert (splits.in_channels, splits.image_size) == (3, 10)
    x, _ = splits.pool.get_batch(range(len(splits.pool)))
    assert x.shape == (len(splits.pool), 3, 10, 10)
    wide = _folder(tmp_path / "wide", {"a": 3, "b": 2}, size=(20, 10))
    _image(wide / "b" / "square.png", size=(16, 16))
    assert _load("imagefolder", wide, val_size=1, test_size=1).image_size == 20  # most common max(w, h)
    big = _folder(tmp_path / "big", {"a": 2, "b": 2}, size=(240, 240), value=9)
    assert _load("imagefolder", big, val_size=1, test_size=1).image_size == 224  # capped


def test_train_test_val_folders_are_the_pool_the_test_and_the_reference_set(tmp_path):
    root = tmp_path / "data"
    _folder(root / "train", {"a": 8, "b": 8})
    _folder(root / "test", {"a": 3, "b": 2}, seed=1000)
    _folder(root / "val", {"a": 2, "b": 2}, seed=2000)
    splits = _load("imagefolder", root)
    assert get_task("classification").check_splits(splits) == []
    for part, folder, n in ((splits.pool, "train", 16), (splits.test, "test", 5), (splits.val, "val", 4)):
        assert len(part) == n and all(p.startswith(folder + "/") for p in part.paths)
        assert _labels_match_paths(part, ["a", "b"])
    shutil.rmtree(root / "val")
    (root / "README").mkdir()
    with pytest.warns(DataWarning, match="ignoring README"):
        splits = _load("imagefolder", root, test_size=4)
    assert len(splits.test) == 4 and all(p.startswith("test/") for p in splits.test.paths)  # cut, stratified
    assert len(splits.val) == 1 and splits.val.paths[0].startswith("train/")  # held out of train
    assert len(splits.pool) == 15 and not set(splits.pool.paths) & set(splits.val.paths)
    shutil.copy(root / splits.pool.paths[0], root / "test" / "b" / "copy.png")  # a pool image in the test set
    with pytest.warns(DataWarning):
        splits = _load("imagefolder", root)
    assert any("1 test image(s) are identical to pool images" in w
               for w in get_task("classification").check_splits(splits))


# ---------------------------------------------------------------------------------------------- csv
def test_csv_without_and_with_a_split_column(tmp_path):
    for k in range(12):
        _image(tmp_path / "img" / f"{k}.png", seed=k)
    labels = ["10", "2", "3"]
    rows = [f"img/{k}.png,{labels[k % 3]},x" for k in range(12)]
    (tmp_path / "plain.csv").write_text("path,label,note\n" + "\n".join(rows) + "\n\n")
    splits = _load("csv", tmp_path / "plain.csv", val_size=2, test_size=3)
    assert splits.pool.classes == ["2", "3", "10"]  # integer labels sort as numbers
    assert (len(splits.pool), len(splits.val), len(splits.test)) == (7, 2, 3)
    for part in (splits.pool, splits.val, splits.test):
        assert all(labels[int(p.split("/")[1][:-4]) % 3] == part.classes[int(y)]
                   for p, y in zip(part.paths, part.labels))
    which = ["train"] * 8 + ["test"] * 3 + ["VAL"]
    rows = [f"img/{k}.png,{labels[k % 3]},{which[k]}" for k in range(12)]
    (tmp_path / "split.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    splits = _load("csv", tmp_path / "split.csv")
    assert splits.pool.paths == [f"img/{k}.png" for k in range(8)]
    assert splits.test.paths == [f"img/{k}.png" for k in range(8, 11)] and splits.val.paths == ["img/11.png"]
    assert labels_of(splits.test).tolist() == [splits.pool.classes.index(labels[k % 3]) for k in range(8, 11)]


# ---------------------------------------------------------------------------------------------- refusals
def _csv(tmp_path, text):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png", seed=1)
    (tmp_path / "l.csv").write_text(text)
    return tmp_path / "l.csv"


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("file", "is a file, not a folder"),
    ("flat", "holds 2 image\\(s\\) but has no class folders"),
    ("one-class", "1 class \\(a\\); classification needs at least two"),
    ("unset", "needs --data-root DIR"),
    ("no-train", "holds test/ but no train/"),
    ("csv-missing", "1 of the 3 listed images do not exist .*line 4, 'c.png'"),
    ("csv-label", "line 3 \\(b.png\\) has an empty label"),
    ("csv-dotdot", "line 2: path '../a.png' points outside"),
    ("csv-absolute", "line 2: path '/etc/a.png' points outside"),
    ("csv-duplicate", "lines 2 and 3 both name 'a.png'"),
    ("csv-split", "line 3 \\(b.png\\) has split 'holdout'; use train, val or test"),
    ("csv-header", "the header must name the columns path and label"),
    ("csv-folder", "is a folder; --dataset csv reads a csv file"),
])
def test_bad_data_is_one_data_error_naming_the_file(tmp_path, case, message):
    name, root = "imagefolder", tmp_path / "data"
    if case == "file":
        root = _image(tmp_path / "x.png")
    elif case == "flat":
        _image(root / "a.png"), _image(root / "b.png")
    elif case == "one-class":
        _folder(root, {"a": 3, "b": 0})
        (root / "b").mkdir()
    elif case == "unset":
        root = None
    elif case == "no-train":
        _folder(root / "test", {"a": 1, "b": 1})
    elif case.startswith("csv"):
        name = "csv"
        text = {"csv-missing": "path,label\na.png,x\nb.png,y\nc.png,y\n",
                "csv-label": "path,label\na.png,x\nb.png, \n",
                "csv-dotdot": "path,label\n../a.png,x\nb.png,y\n",
                "csv-absolute": "path,label\n/etc/a.png,x\nb.png,y\n",
                "csv-duplicate": "path,label\n./a.png,x\na.png,y\n",
                "csv-split": "path,label,split\na.png,x,train\nb.png,y,holdout\n",
                "csv-header": "file,class\na.png,x\n",
                "csv-folder": ""}[case]
        root = tmp_path if case == "csv-folder" else _csv(tmp_path, text)
    with pytest.raises(DataError, match=message) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the empty class folder of "one-class"
        _load(name, root)
    assert "\n" not in str(info.value)


def test_unreadable_images_and_empty_class_folders_are_left_out_with_a_warning(tmp_path):
    root = _folder(tmp_path / "data", {"a": 6, "b": 6})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "b" / "fake.jpg").write_text("text")
    (root / "empty").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = _load("imagefolder", root, val_size=2, test_size=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("1 class folder(s) hold no images" in m and "empty/" in m for m in messages)
    assert any("2 of its 14 image files cannot be read" in m and "broken.png" in m for m in messages)
    paths = splits.pool.paths + splits.val.paths + splits.test.paths
    assert len(paths) == 12 and splits.num_classes == 2 and splits.identity["unreadable"] == 2


# ---------------------------------------------------------------------------------------------- the data set
def test_get_batch_equals_a_direct_pillow_decode_and_the_fingerprint_sees_paths_sizes_and_labels(tmp_path):
    paths = [_image(tmp_path / f"{k}.png", size=(9, 7), mode="RGB", seed=k).name for k in range(5)]
    mean, std = image_stats(tmp_path, paths, 3, 8)
    ds = ImageFileDataset(tmp_path, paths, [0, 1, 0, 1, -1], image_size=8, channels=3, mean=mean, std=std,
                          classes=["a", "b"])
    x, y = ds.get_batch(torch.tensor([4, 0, 2]))
    expected = np.stack([np.asarray(Image.open(tmp_path / paths[k]).convert("RGB").resize((8, 8), Image.BILINEAR))
                         for k in (4, 0, 2)]).transpose(0, 3, 1, 2)
    want = (torch.from_numpy(expected).float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3,
                                                                                                           1, 1)
    assert torch.equal(x, want) and y.tolist() == [-1, 0, 0]
    assert torch.equal(read_image(tmp_path / paths[0], 3, 8), torch.from_numpy(expected[1]))  # image 0
    pixels = torch.stack([read_image(tmp_path / p, 3, 8) for p in paths]).double()
    assert np.allclose(mean, pixels.mean((0, 2, 3)).numpy(), atol=1e-3)
    assert np.allclose(std, pixels.std((0, 2, 3), unbiased=False).numpy(), atol=1e-3)
    assert read_image(tmp_path / paths[1], 1, 8).shape == (1, 8, 8)
    x, y = ds[3]
    assert x.shape == (3, 8, 8) and y == 1 and len(ds) == 5
    sub = ds.subset([3, 1])
    assert sub.paths == [paths[3], paths[1]] and torch.equal(sub.get_batch([0, 1])[0], ds.get_batch([3, 1])[0])
    assert labels_of(sub).tolist() == [1, 1] and labels_of(ds.with_labels([1, 1, 1, 0, 0])).tolist()[-1] == 0
    print_ = ds.fingerprint()
    assert ds.with_labels([0, 1, 0, 1, 1]).fingerprint() != print_
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    copy = ImageFileDataset(moved, paths, ds.labels, image_size=8, channels=3, mean=mean, std=std)
    assert copy.fingerprint() == print_  # where the folder lies does not count
    _image(moved / paths[0], size=(30, 30), mode="RGB")
    assert copy.fingerprint() != print_  # another file (another size)
    wide = np.array([[0, 65535], [257, 30000]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert read_image(tmp_path / "wide.png", 1, 2).flatten().tolist() == [0, 255, 1, 117]  # 16 bit scaled to 8
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot read image .*bad.png"):
        ImageFileDataset(tmp_path, ["bad.png"], [0], image_size=8, channels=1, mean=[0], std=[1]).get_batch([0])
    with pytest.raises(DataError, match="labels must be class indices >= 0 \\(or -1"):
        ds.with_labels([0, 1, 0, 1, -2])


# ---------------------------------------------------------------------------------------------- end to end
def test_influal_run_on_an_image_folder_resumes_and_refuses_changed_data(tmp_path, capsys):
    root = tmp_path / "data"
    for k, name in enumerate(("dark", "light")):
        for i in range(30):
            _image(root / name / f"{i}.png", size=(16, 16), value=60 + 120 * k + i)
    args = ["run", "--dataset", "imagefolder", "--data-root", str(root), "--model", "cnn", "--strategies",
            "random,isal", "--initial", "10", "--budget", "10", "--rounds", "2", "--seeds", "1", "--epochs", "1",
            "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]
    with one_thread():
        assert main(args) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    data = config["provenance"]["data"]
    assert config["dataset"] == "imagefolder" and (data["pool"], data["val"], data["test"]) == (42, 6, 12)
    assert data["in_channels"] == 1 and data["image_size"] == 16 and len(data["fingerprint"]["pool"]) == 16
    state = json.loads((tmp_path / "out" / "runs" / "isal" / "seed0" / "state.json").read_text())
    assert len(state["rounds"]) == 2 and len(state["rounds"][0]["selected"]) == 10
    assert main(args) == 0  # finished: resumed, nothing recomputed
    shutil.move(root / "dark" / "0.png", root / "light" / "moved.png")  # one label changed
    capsys.readouterr()
    assert main(args) == 2
    assert "computed on other data" in capsys.readouterr().err


def _coco_tree(tmp_path) -> Path:
    """A COCO-style tree: train/ and val/ image folders, annotations/instances_{train,val}.json."""
    src = write_digit_canvas(tmp_path / "src", SPEC)
    tree = tmp_path / "coco"
    for split, folder in (("pool", "train"), ("test", "val")):
        data = json.loads((src / f"{split}.json").read_text())
        (tree / folder).mkdir(parents=True)
        for info in data["images"]:
            name = Path(info["file_name"]).name
            shutil.copy(src / info["file_name"], tree / folder / name)
            info["file_name"] = name
        (tree / "annotations").mkdir(exist_ok=True)
        (tree / "annotations" / f"instances_{folder}.json").write_text(json.dumps(data))
    return tree


def test_influal_run_on_a_coco_tree_with_separate_image_and_annotation_paths(tmp_path, capsys):
    tree = _coco_tree(tmp_path)
    paths = ["--images", str(tree / "train"), "--annotations", str(tree / "annotations" / "instances_train.json")]
    test = ["--test-images", str(tree / "val"), "--test-annotations", str(tree / "annotations" / "instances_val.json")]
    args = ["run", "--task", "detection", "--dataset", "coco", *paths, *test, "--model", "fcos", "--backbone",
            "tiny", "--min-size", "48", "--val-size", "3", "--initial", "4", "--budget", "2", "--rounds", "2",
            "--seeds", "1", "--epochs", "1", "--strategies", "random", "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "out")]
    with one_thread():
        assert main(args) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["task_settings"]["images"] == str(tree / "train") and "val_annotations" not in config["task_settings"]
    data = config["provenance"]["data"]
    assert (data["pool"], data["val"], data["test"]) == (SPEC.pool - 3, 3, SPEC.test)
    # without a test json, a test set is held out of the pool; the reference set too
    load = get_task("detection").load_data
    base = dict(task="detection", dataset="coco", val_size=2, test_size=3)
    splits = load(ExperimentConfig(**base, task_settings=DetectionSettings(
        images=str(tree / "train"), annotations=str(tree / "annotations" / "instances_train.json"))))
    ids = [{part.image_id(i) for i in range(len(part))} for part in (splits.pool, splits.val, splits.test)]
    assert [len(s) for s in ids] == [SPEC.pool - 5, 2, 3]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    # mixing the two ways, half a pair, and the paths with another data set are refused before anything is written
    capsys.readouterr()
    assert main(args[:-1] + [str(tmp_path / "mixed"), "--data-root", str(tree)]) == 2
    assert "either --data-root DIR" in capsys.readouterr().err and not (tmp_path / "mixed").exists()
    pool_json = str(tree / "annotations" / "instances_train.json")
    for settings, dataset, message in [
            (dict(annotations=pool_json), "coco", "--annotations needs --images"),
            (dict(images=str(tree / "train"), annotations=str(tree / "x.json")), "coco", "COCO json .*x.json does not"),
            (dict(images=str(tree / "nope"), annotations="a.json"), "coco", "--images .*nope does not exist"),
            (dict(images=str(tree / "train")), "digit-canvas", "--images only apply to --dataset coco")]:
        with pytest.raises((ConfigError, DataError), match=message):
            load(ExperimentConfig(**{**base, "dataset": dataset}, task_settings=DetectionSettings(**settings)))


def test_unset_coco_paths_leave_config_json_and_the_experiment_id_as_before():
    saved = DetectionSettings().to_dict()
    assert not {"images", "annotations", "test_images", "test_annotations", "val_annotations"} & set(saved)
    assert DetectionSettings.from_dict(saved) == DetectionSettings()
    given = DetectionSettings(images="imgs", annotations="a.json")
    assert DetectionSettings.from_dict(given.to_dict()) == given and given.to_dict()["images"] == "imgs"
    plain = ExperimentConfig(task="detection")
    assert plain.experiment_id("random") != plain.replace(task_settings=given).experiment_id("random")
    with pytest.raises(ConfigError, match="detection.images must be a path"):
        DetectionSettings(images="")
