"""Detection data: the digit-canvas generator, the COCO-json loader and the VOC converter."""

import hashlib

import numpy as np
import pytest
import torch
from detection_utils import SPEC, canvas
from PIL import Image

from influal.core.errors import ConfigError, DataError
from influal.tasks.detection.datasets.canvas import CanvasSpec, write_digit_canvas
from influal.tasks.detection.datasets.coco import CocoDetectionDataset
from influal.tasks.detection.datasets.voc import VOC_CLASSES, load_voc, voc_to_coco


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_and_seed_dependent(tmp_path):
    a = write_digit_canvas(tmp_path / "a", SPEC)
    b = write_digit_canvas(tmp_path / "b", SPEC)
    c = write_digit_canvas(tmp_path / "c", CanvasSpec(**{**SPEC.__dict__, "seed": SPEC.seed + 1}))
    assert _digest(a) == _digest(b)
    assert len(_digest(a)) == 1 + 3 + SPEC.pool + SPEC.val + SPEC.test  # meta, three jsons, the PNGs
    assert _digest(a)["pool.json"] != _digest(c)["pool.json"]


def test_generator_boxes_are_tight_digit_boxes_inside_the_canvas(tmp_path):
    data = canvas(tmp_path)
    for split, ds in data.items():
        counts = ds.boxes_per_image()
        assert counts.min() >= 1 and counts.max() <= SPEC.max_digits
        for i in range(len(ds)):
            image = ds.image_uint8(i)[0].numpy()
            assert image.shape == (SPEC.image_size, SPEC.image_size)
            for x0, y0, x1, y1 in ds.target(i)["boxes"].round().int().tolist():
                assert 0 <= x0 < x1 <= SPEC.image_size and 0 <= y0 < y1 <= SPEC.image_size
                inside = image[y0:y1, x0:x1] >= SPEC.ink
                # tight: ink touches all four sides of the box
                assert inside[:, 0].any() and inside[:, -1].any() and inside[0, :].any() and inside[-1, :].any()
            labels = ds.target(i)["labels"]
            assert ((labels >= 1) & (labels <= 10)).all()


def test_generator_reuses_a_matching_folder_and_refuses_another_spec(tmp_path):
    root = write_digit_canvas(tmp_path / "d", SPEC)
    before = _digest(root)
    assert write_digit_canvas(root, SPEC) == root and _digest(root) == before
    with pytest.raises(ConfigError, match="other settings"):
        write_digit_canvas(root, CanvasSpec(**{**SPEC.__dict__, "pool": SPEC.pool + 1}))


def _write_png(path, size=(20, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), 200, dtype=np.uint8)).save(path)


def test_coco_loader_converts_boxes_skips_crowd_and_counts_every_box(tmp_path):
    _write_png(tmp_path / "im" / "a.png")
    _write_png(tmp_path / "im" / "b.png")
    coco = {"images": [{"id": 7, "file_name": "im/a.png", "width": 20, "height": 10},
                       {"id": 9, "file_name": "im/b.png", "width": 20, "height": 10}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
                            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [2.5, 1, 4, 2]}],
            "categories": [{"id": 5, "name": "five"}, {"id": 3, "name": "three"}]}
    ds = CocoDetectionDataset(coco, tmp_path)
    assert ds.category_ids == [3, 5] and ds.class_names == ["three", "five"] and ds.num_classes == 2
    t0 = ds.target(0)
    assert t0["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0]] and t0["labels"].tolist() == [2]  # crowd box dropped
    assert ds.target(1)["boxes"].tolist() == [[2.5, 1.0, 6.5, 3.0]] and ds.target(1)["labels"].tolist() == [1]
    assert ds.num_boxes([0]) == 2 and ds.num_boxes([0, 1]) == 3 and ds.num_boxes([]) == 0
    images, targets = ds.get_batch([1, 0])
    assert images[0].shape == (3, 10, 20) and torch.allclose(images[0], torch.full((3, 10, 20), 200 / 255))
    sub = ds.subset([1])
    assert len(sub) == 1 and sub.image_id(0) == 9 and sub.target(0)["labels"].tolist() == [1]
    gt = ds.coco_subset([0])
    assert [a["id"] for a in gt["annotations"]] == [1, 2] and gt["annotations"][0]["area"] == 12


def test_coco_loader_rejects_unknown_categories(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "x.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1]}],
            "categories": [{"id": 1, "name": "a"}]}
    with pytest.raises(DataError, match="category 99"):
        CocoDetectionDataset(coco, tmp_path)


VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>40</width><height>30</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJ = ("<object><name>{cls}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
           "<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def _voc_folder(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    objs = {"2008_000001": [("dog", 0, 1, 1, 10, 20), ("person", 1, 5, 6, 30, 30)],
            "2008_000002": [("aeroplane", 0, 11, 4, 40, 9)]}
    for name, items in objs.items():
        xml = VOC_XML.format(name=name, objects="".join(
            VOC_OBJ.format(cls=c, difficult=d, x0=a, y0=b, x1=e, y1=f) for c, d, a, b, e, f in items))
        (root / "Annotations" / f"{name}.xml").write_text(xml)
        Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    (root / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n2008_000002\n")


def test_voc_converter_shifts_to_zero_based_inclusive_boxes_and_marks_difficult(tmp_path):
    _voc_folder(tmp_path)
    coco = voc_to_coco(tmp_path, "train")
    assert [c["name"] for c in coco["categories"]] == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    dog, person, plane = coco["annotations"]
    assert dog["bbox"] == [0.0, 0.0, 10.0, 20.0] and dog["category_id"] == VOC_CLASSES.index("dog") + 1
    assert person["iscrowd"] == 1 and dog["iscrowd"] == 0
    assert plane["image_id"] == 2 and plane["bbox"] == [10.0, 3.0, 30.0, 6.0]
    ds = load_voc(tmp_path, "train")
    assert len(ds) == 2 and ds.num_boxes([0, 1]) == 3
    assert ds.target(0)["boxes"].tolist() == [[0.0, 0.0, 10.0, 20.0]]  # the difficult person is not a target
    assert ds.image(1).shape == (3, 30, 40)


def test_voc_converter_reports_missing_files_and_unknown_classes(tmp_path):
    with pytest.raises(DataError, match="ImageSets"):
        voc_to_coco(tmp_path, "train")
    _voc_folder(tmp_path)
    xml = tmp_path / "Annotations" / "2008_000002.xml"
    xml.write_text(xml.read_text().replace("aeroplane", "unicorn"))
    with pytest.raises(DataError, match="unicorn"):
        voc_to_coco(tmp_path, "train")


# ---------------------------------------------------------------- bad inputs: one DataError naming the entry
def _valid_coco():
    return {"images": [{"id": 1, "file_name": "im/a.png", "width": 20, "height": 10},
                       {"id": 2, "file_name": "im/b.png", "width": 20, "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
                            {"id": 2, "image_id": 2, "category_id": 5, "bbox": [0, 0, 20, 10]}],
            "categories": [{"id": 3, "name": "three"}, {"id": 5, "name": "five"}]}


def _corrupt(where, key, value):
    def apply(coco):
        entry = coco[where][0] if where != "top" else coco
        if value is _DROP:
            del entry[key]
        else:
            entry[key] = value
        return coco
    return apply


_DROP = object()
COCO_CORRUPTIONS = {
    "zero width": (_corrupt("annotations", "bbox", [1, 2, 0, 4]), "annotation 1 \\(image 1, 'im/a.png'\\).*width"),
    "negative height": (_corrupt("annotations", "bbox", [1, 2, 3, -4]), "annotation 1 .*height -4"),
    "box past the right border": (_corrupt("annotations", "bbox", [15, 2, 8, 4]), "annotation 1 .*outside the image"),
    "box above the image": (_corrupt("annotations", "bbox", [1, -5, 3, 4]), "annotation 1 .*outside the image"),
    "NaN coordinate": (_corrupt("annotations", "bbox", [1, float("nan"), 3, 4]), "annotation 1 .*four finite"),
    "infinite width": (_corrupt("annotations", "bbox", [1, 2, float("inf"), 4]), "annotation 1 .*four finite"),
    "huge integer": (_corrupt("annotations", "bbox", [1, 2, 10**400, 4]), "annotation 1 .*four finite numbers"),
    "three numbers": (_corrupt("annotations", "bbox", [1, 2, 3]), "annotation 1 .*four finite numbers"),
    "string coordinate": (_corrupt("annotations", "bbox", [1, "2", 3, 4]), "annotation 1 .*four finite numbers"),
    "bbox not a list": (_corrupt("annotations", "bbox", "1 2 3 4"), "annotation 1 .*four finite numbers"),
    "no bbox": (_corrupt("annotations", "bbox", _DROP), "annotation 1 .*has no bbox"),
    "string image_id": (_corrupt("annotations", "image_id", "1"), "annotation 1 has image_id '1'"),
    "float image_id": (_corrupt("annotations", "image_id", 1.5), "annotation 1 has image_id 1.5"),
    "no image_id": (_corrupt("annotations", "image_id", _DROP), "annotation 1 has image_id None"),
    "image_id of no image": (_corrupt("annotations", "image_id", 9), "annotation 1 refers to image 9"),
    "unknown category": (_corrupt("annotations", "category_id", 4), "annotation 1 .*category 4"),
    "string category": (_corrupt("annotations", "category_id", "3"), "annotation 1 .*category '3'"),
    "iscrowd yes": (_corrupt("annotations", "iscrowd", "yes"), "annotation 1 .*iscrowd 'yes'"),
    "negative area": (_corrupt("annotations", "area", -1), "annotation 1 .*area -1"),
    "string annotation id": (_corrupt("annotations", "id", "a1"), "annotation #0 has id 'a1'"),
    "image without file_name": (_corrupt("images", "file_name", _DROP), "image 1 has no file_name"),
    "empty file_name": (_corrupt("images", "file_name", ""), "image 1 has no file_name"),
    "string image id": (_corrupt("images", "id", "1"), "image #0 \\('im/a.png'\\) has id '1'"),
    "negative width": (_corrupt("images", "width", -20), "image 1 .*width -20"),
    "string height": (_corrupt("images", "height", "10"), "image 1 .*height '10'"),
    "string category id": (_corrupt("categories", "id", "3"), "category #0 has id '3'"),
    "file_name with ..": (_corrupt("images", "file_name", "../secret.png"), "'../secret.png', which points outside"),
    "nested ..": (_corrupt("images", "file_name", "im/../../secret.png"), "points outside the image folder"),
    "absolute file_name": (_corrupt("images", "file_name", "/etc/passwd"), "'/etc/passwd', which points outside"),
    "windows drive": (_corrupt("images", "file_name", "C:\\\\x.png"), "which points outside the image folder"),
    "backslash ..": (_corrupt("images", "file_name", "..\\\\x.png"), "which points outside the image folder"),
    "images not a list": (_corrupt("top", "images", {"id": 1}), "lacks the list 'images'"),
}


@pytest.mark.parametrize("corruption", sorted(COCO_CORRUPTIONS))
def test_a_corrupt_coco_entry_is_a_data_error_naming_it(tmp_path, corruption):
    apply, message = COCO_CORRUPTIONS[corruption]
    CocoDetectionDataset(_valid_coco(), tmp_path)  # the valid dict loads
    with pytest.raises(DataError, match=message) as info:
        CocoDetectionDataset(apply(_valid_coco()), tmp_path, source="train.json")
    assert str(info.value).startswith("train.json") and "\n" not in str(info.value)


def test_duplicate_ids_and_files_are_data_errors(tmp_path):
    coco = _valid_coco()
    coco["images"][1]["id"] = 1
    with pytest.raises(DataError, match="image ids are not unique: 1 is the id of images #0 and #1"):
        CocoDetectionDataset(coco, tmp_path)
    coco = _valid_coco()
    coco["images"][1]["file_name"] = "im//a.png"
    with pytest.raises(DataError, match="images 1 and 2 are the same file"):
        CocoDetectionDataset(coco, tmp_path)
    coco = _valid_coco()
    coco["annotations"][1]["id"] = 1
    with pytest.raises(DataError, match="annotation ids are not unique: 1 appears twice"):
        CocoDetectionDataset(coco, tmp_path)
    coco = _valid_coco()
    coco["categories"][1]["id"] = 3
    with pytest.raises(DataError, match="category ids are not unique: 3 appears twice"):
        CocoDetectionDataset(coco, tmp_path)


def test_crowd_boxes_may_have_zero_area_but_never_a_negative_one(tmp_path):
    coco = _valid_coco()
    coco["annotations"][0].update(bbox=[1, 2, 0, 4], iscrowd=1)  # an ignore region: kept, counted, not a target
    ds = CocoDetectionDataset(coco, tmp_path)
    assert ds.num_boxes([0]) == 1 and ds.target(0)["boxes"].shape == (0, 4)
    coco["annotations"][0].update(bbox=[1, 2, -1, 4])
    with pytest.raises(DataError, match="annotation 1"):
        CocoDetectionDataset(coco, tmp_path)


def test_boxes_may_reach_one_pixel_past_the_border(tmp_path):
    coco = _valid_coco()
    coco["annotations"][1]["bbox"] = [-0.5, -1.0, 21.0, 10.8]  # annotation tools' float slack
    CocoDetectionDataset(coco, tmp_path)
    coco["annotations"][1]["bbox"] = [0, 0, 21.5, 10]
    with pytest.raises(DataError, match="annotation 2 .*outside the image of width 20"):
        CocoDetectionDataset(coco, tmp_path)


def test_coco_subset_never_gives_two_annotations_one_id(tmp_path):
    coco = _valid_coco()
    coco["annotations"].append({"image_id": 2, "category_id": 3, "bbox": [1, 1, 2, 2]})  # no id: gets a free one
    coco["annotations"][0]["id"] = 3
    ds = CocoDetectionDataset(coco, tmp_path)
    ids = [a["id"] for a in ds.coco_subset()["annotations"]]
    assert sorted(ids) == [1, 2, 3] and ids[:2] == [3, 2]
    assert len(ds.subset([1, 0])) == 2  # and a subset of it loads


def _coco_folder(root, coco, write=("train.json", "test.json"), images=True):
    import json

    root.mkdir(parents=True, exist_ok=True)
    for name in write:
        (root / name).write_text(json.dumps(coco))
    if images:
        for info in coco["images"]:
            _write_png(root / info["file_name"], (info.get("width", 20), info.get("height", 10)))
    return root


def _coco_config(root, **changes):
    from types import SimpleNamespace

    from influal.tasks.detection.settings import DetectionSettings

    return SimpleNamespace(**{"dataset": "coco", "data_root": str(root), "val_size": 1, "test_size": None,
                              "task_settings": DetectionSettings(image_size=48), **changes})


def _three_images():
    coco = _valid_coco()
    coco["images"].append({"id": 3, "file_name": "im/c.png", "width": 20, "height": 10})
    coco["annotations"].append({"id": 3, "image_id": 3, "category_id": 3, "bbox": [2, 2, 4, 4]})
    return coco


def test_missing_image_files_are_found_before_anything_is_written(tmp_path):
    from influal.loop import Experiment
    from influal.loop.config import ExperimentConfig
    from influal.settings import TrainConfig
    from influal.tasks.detection.datasets import load_coco
    from influal.tasks.detection.settings import DetectionSettings

    root = _coco_folder(tmp_path / "data", _three_images())
    (root / "im" / "b.png").unlink()
    (root / "im" / "c.png").unlink()
    with pytest.raises(DataError, match=r"train.json: 2 of its 3 image files do not exist under .* "
                                        r"\(the first: 'im/b.png'\)"):
        load_coco(_coco_config(root))
    config = ExperimentConfig(task="detection", dataset="coco", data_root=str(root), initial=1, budget=1, rounds=1,
                              seeds=1, val_size=1, strategies=("random",), train=TrainConfig(epochs=1, milestones=()),
                              task_settings=DetectionSettings(image_size=48))
    with pytest.raises(DataError, match="do not exist"):
        Experiment.prepare(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_test_file_missing_images_is_found_too(tmp_path):
    import json

    from influal.tasks.detection.datasets import load_coco

    root = _coco_folder(tmp_path, _three_images())
    test = _three_images()
    test["images"][2]["file_name"] = "im/elsewhere.png"
    (root / "test.json").write_text(json.dumps(test))
    with pytest.raises(DataError, match="test.json: 1 of its 3 image files .*'im/elsewhere.png'"):
        load_coco(_coco_config(root))


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty"])
def test_an_image_that_does_not_decode_is_a_data_error_naming_it(tmp_path, content):
    _write_png(tmp_path / "im" / "a.png", (20, 10))
    path = tmp_path / "im" / "a.png"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x89PNG not really" * 8, "empty": b""}[content])
    ds = CocoDetectionDataset(_valid_coco(), tmp_path)
    with pytest.raises(DataError, match=r"cannot read image .*im/a.png") as info:
        ds.image(0)
    assert "\n" not in str(info.value)


def test_an_image_of_another_size_than_its_entry_says_is_a_data_error(tmp_path):
    _write_png(tmp_path / "im" / "a.png", (30, 10))
    ds = CocoDetectionDataset(_valid_coco(), tmp_path)
    with pytest.raises(DataError, match="is 30x10 pixels, but .* says 20x10"):
        ds.image(0)


def test_pool_images_without_annotations_are_dropped_with_a_warning(tmp_path):
    from influal.core.errors import DataWarning
    from influal.tasks.detection.datasets import load_coco

    coco = _three_images()
    coco["images"] += [{"id": 4, "file_name": "im/d.png", "width": 20, "height": 10},
                       {"id": 5, "file_name": "im/e.png", "width": 20, "height": 10}]
    root = _coco_folder(tmp_path, coco, write=("train.json",))
    _coco_folder(tmp_path, {**coco, "images": [{"id": 1, "file_name": "t/x.png", "width": 20, "height": 10}],
                            "annotations": []}, write=("test.json",))
    with pytest.warns(DataWarning, match="2 of the 5 images of .*train.json have no annotations"):
        splits = load_coco(_coco_config(root))
    assert len(splits.pool) + len(splits.val) == 3


def test_a_test_file_sharing_images_with_the_pool_is_a_warning(tmp_path):
    import warnings

    from influal.core.errors import DataWarning
    from influal.tasks.detection.datasets import load_coco

    root = _coco_folder(tmp_path, _three_images())  # the same file as train.json and test.json
    with pytest.warns(DataWarning, match="3 of the 3 test images \\(by file_name\\) are also in the pool"):
        load_coco(_coco_config(root))
    test = _three_images()
    test["images"][0]["file_name"] = "./im/a.png"  # the same file, spelled differently
    test["images"][1]["file_name"] = "other/b.png"
    test["images"][2]["file_name"] = "other/c.png"
    _coco_folder(tmp_path, test, write=("test.json",))
    with pytest.warns(DataWarning, match="1 of the 3 test images"):
        load_coco(_coco_config(root))
    test["images"][0]["file_name"] = "other/a.png"
    _coco_folder(tmp_path, test, write=("test.json",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_coco(_coco_config(root))  # disjoint files: no warning


def test_a_pool_without_any_annotation_is_a_data_error(tmp_path):
    from influal.tasks.detection.datasets import load_coco

    root = _coco_folder(tmp_path, {**_valid_coco(), "annotations": []})
    with pytest.raises(DataError, match="none of the 2 images of .*train.json has an annotation"):
        load_coco(_coco_config(root))


@pytest.mark.parametrize("content, message", [("{not json", "is not valid JSON"),
                                              ("[1, 2]", "not a COCO detection json")])
def test_a_coco_file_that_is_not_a_coco_object_is_a_data_error(tmp_path, content, message):
    (tmp_path / "train.json").write_text(content)
    with pytest.raises(DataError, match=message):
        CocoDetectionDataset.from_json(tmp_path / "train.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataError, match="does not exist"):
        CocoDetectionDataset.from_json(tmp_path / "dir.json")


@pytest.mark.parametrize("field, value, message", [
    ("x0", "abc", "<xmin> is 'abc'; it must be a number"),
    ("x1", "abc", "<xmax> is 'abc'; it must be a number"),
    ("x1", "nan", "<xmax> is 'nan'"),
    ("x1", 0, "the dog box \\(1, 1, 0, 20\\) is inverted"),
    ("y1", 0, "the dog box \\(1, 1, 10, 0\\) is inverted"),
    ("difficult", "yes", "<difficult> is 'yes'; it must be 0 or 1"),
    ("difficult", "2", "<difficult> is '2'"),
])
def test_a_bad_voc_object_is_a_data_error_naming_the_file(tmp_path, field, value, message):
    _voc_folder(tmp_path)
    xml = tmp_path / "Annotations" / "2008_000001.xml"
    fields = dict(cls="dog", difficult=0, x0=1, y0=1, x1=10, y1=20)
    fields[field] = value
    xml.write_text(VOC_XML.format(name="2008_000001", objects=VOC_OBJ.format(**fields)))
    with pytest.raises(DataError, match=f"2008_000001.xml: {message}"):
        voc_to_coco(tmp_path, "train")


def test_a_bad_voc_size_or_file_name_is_a_data_error_naming_the_file(tmp_path):
    _voc_folder(tmp_path)
    xml = tmp_path / "Annotations" / "2008_000001.xml"
    good = xml.read_text()
    xml.write_text(good.replace("<width>40</width>", "<width>forty</width>"))
    with pytest.raises(DataError, match="2008_000001.xml: <width> is 'forty'"):
        voc_to_coco(tmp_path, "train")
    xml.write_text(good.replace("<width>40</width>", "<width>-40</width>"))
    with pytest.raises(DataError, match="2008_000001.xml: the image size -40x30"):
        voc_to_coco(tmp_path, "train")
    xml.write_text(good.replace("<filename>2008_000001.jpg", "<filename>../../etc/passwd"))
    with pytest.raises(DataError, match="2008_000001.xml: <filename> '../../etc/passwd'"):
        voc_to_coco(tmp_path, "train")
    xml.write_text(good)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("../outside\n")
    with pytest.raises(DataError, match="train.txt: '../outside' is not an image id"):
        voc_to_coco(tmp_path, "train")


def test_the_voc_loader_checks_its_image_files(tmp_path):
    from influal.tasks.detection.datasets import load_voc_folder

    _voc_folder(tmp_path)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")
    (tmp_path / "JPEGImages" / "2008_000002.jpg").unlink()
    with pytest.raises(DataError, match="train.txt: 1 of its 2 image files .*'JPEGImages/2008_000002.jpg'"):
        load_voc_folder(_coco_config(tmp_path, dataset="voc"))
