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
