"""The labeling workflow for detection on digit-canvas images: COCO labels in and out, Label Studio rectangles in
percent, box validation, empty images, an ISAL query with the tiny FCOS."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from detection_utils import one_thread
from project_utils import label_studio_export, snapshot, write_json

from influal.project import LabelImportError, Project
from influal.settings import TrainConfig
from influal.tasks.detection.datasets.canvas import CanvasSpec, write_digit_canvas

SPEC = CanvasSpec(pool=30, val=6, test=1, image_size=48, min_scale=12, max_scale=18, seed=3)
TRAIN = TrainConfig.preset("detection").replace(epochs=2, milestones=(), warmup_iters=2)
ISAL = {"solver": "lissa", "lissa_depth": 5, "lissa_repeats": 1}


@pytest.fixture(scope="module")
def canvas(tmp_path_factory):
    root = write_digit_canvas(tmp_path_factory.mktemp("canvas") / "c", SPEC)
    pool = json.loads((root / "pool.json").read_text())
    return root, pool


@pytest.fixture(scope="module")
def started(canvas, tmp_path_factory):
    """A project with the canvas' val.json as its reference set and one answered cold-start batch of 12."""
    root, pool = canvas
    path = tmp_path_factory.mktemp("projects") / "det"
    project = Project.init(path, task="detection", images=root, val=root / "val.json")
    project.query("random", budget=12)
    project.import_labels(write_json(path.parent / "answers.json", truth_coco(project, pool, 1)), allow_empty=True)
    return path


def truth_coco(project, pool, round_index):
    """The canvas' ground truth for a query's batch, as a COCO json an annotator's tool would write."""
    with open(project.store.query_dir(round_index) / "batch.csv", newline="") as fh:
        wanted = {row["path"] for row in csv.DictReader(fh)}
    images = [im for im in pool["images"] if im["file_name"] in wanted]
    ids = {im["id"] for im in images}
    return {"images": images, "annotations": [a for a in pool["annotations"] if a["image_id"] in ids],
            "categories": pool["categories"]}


def copy_of(path, tmp_path):
    shutil.copytree(path, tmp_path / "copy")
    return Project(tmp_path / "copy")


def test_init_reads_the_classes_and_reference_boxes_from_coco(canvas, tmp_path):
    root, _ = canvas
    project = Project.init(tmp_path / "p", task="detection", images=root, val=root / "val.json")
    val = json.loads((root / "val.json").read_text())
    assert project.classes == [c["name"] for c in val["categories"]]
    assert len(project.records) == SPEC.pool + SPEC.val + SPEC.test
    assert len(project.labels.ids("val")) == SPEC.val
    status = project.status(plot=False)
    assert status["cost"]["val"] == len(val["annotations"]) and status["cost_unit"] == "boxes"


def test_a_cold_query_asks_only_for_unlabeled_images_and_offers_coco_and_rectangles(started, tmp_path):
    project = copy_of(started, tmp_path)
    with one_thread():
        record = project.query("isal", budget=6, train=TRAIN, strategy_settings=ISAL)
    assert record["trained"] and "AP" in record["metrics"] and record["val_reserved"] == []
    assert not set(record["selected"]) & set(project.labels.labels)
    folder = project.store.query_dir(2)
    coco = json.loads((folder / "batch.coco.json").read_text())
    assert [im["id"] for im in coco["images"]] == record["selected"]
    assert [c["name"] for c in coco["categories"]] == project.classes
    tasks = json.loads((folder / "tasks.json").read_text())
    xml = (folder / "labeling-config.xml").read_text()
    assert '<RectangleLabels name="label" toName="image">' in xml
    for task, image in zip(tasks, coco["images"]):
        mine = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        result = task.get("predictions", [{}])[0].get("result", [])
        assert len(result) == len(mine)
        for item, ann in zip(result, mine):  # the same box, in percent of the image for Label Studio
            v = item["value"]
            assert [v["x"] * image["width"] / 100, v["y"] * image["height"] / 100,
                    v["width"] * image["width"] / 100, v["height"] * image["height"] / 100] == pytest.approx(ann["bbox"])


def test_corrected_predictions_round_trip_through_a_label_studio_export(started, tmp_path):
    """What an annotator accepts in Label Studio (the pre-annotations) comes back as the same boxes in pixels."""
    project = copy_of(started, tmp_path)
    with one_thread():
        project.query("isal", budget=4, train=TRAIN, strategy_settings=ISAL)
    tasks = json.loads((project.store.query_dir(2) / "tasks.json").read_text())
    coco = json.loads((project.store.query_dir(2) / "batch.coco.json").read_text())
    export = label_studio_export(tasks, {k: t["predictions"][0]["result"] for k, t in enumerate(tasks)})
    project.import_labels(write_json(tmp_path / "export.json", export), allow_empty=True)
    for image in coco["images"]:
        boxes = [{"label": project.classes[a["category_id"] - 1], "bbox": a["bbox"]} for a in coco["annotations"]
                 if a["image_id"] == image["id"]]
        got = project.labels.labels[image["id"]]["answer"]["boxes"]
        assert [b["label"] for b in got] == [b["label"] for b in boxes]
        for g, b in zip(got, boxes):
            assert g["bbox"] == pytest.approx(b["bbox"], abs=1e-2)


def _rect(x, y, w, h, label="3", **extra):
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 48,
            "original_height": 48, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                              "rectanglelabels": [label]}, **extra}


@pytest.mark.parametrize("result, match", [
    ([_rect(90, 10, 20, 20)], "lies outside the image of 48x48 pixels"),
    ([_rect(10, 10, 0, 20)], "zero or negative area"),
    ([_rect(10, 10, 20, 20, label="cat")], "is not among the project's 10 classes"),
    ([{**_rect(10, 10, 20, 20), "original_width": 64}], "was drawn on an image of width 64"),
    ([{**_rect(10, 10, 20, 20), "value": {**_rect(10, 10, 20, 20)["value"], "rotation": 30}}], "is rotated"),
    ([], "has an empty annotation; if the image holds no object, import with --allow-empty"),
])
def test_bad_boxes_are_refused_and_nothing_changes(started, tmp_path, result, match):
    project = copy_of(started, tmp_path)
    project.query("random", budget=3)
    tasks = json.loads((project.store.query_dir(2) / "tasks.json").read_text())
    export = label_studio_export(tasks, {0: result, 1: [_rect(10, 10, 20, 20)], 2: [_rect(50, 50, 10, 10)]})
    file = write_json(tmp_path / "bad.json", export)
    before = snapshot(project.path)
    with pytest.raises(LabelImportError) as info:
        project.import_labels(file)
    assert snapshot(project.path) == before
    assert any(match in line for line in info.value.problems), info.value.problems


def test_an_empty_image_is_a_label_with_allow_empty(started, tmp_path):
    project = copy_of(started, tmp_path)
    project.query("random", budget=2)
    tasks = json.loads((project.store.query_dir(2) / "tasks.json").read_text())
    export = write_json(tmp_path / "e.json", label_studio_export(tasks, {0: [], 1: [_rect(25, 25, 50, 50, "7")]}))
    result = project.import_labels(export, allow_empty=True)
    assert result["merged"] == 2
    assert project.labels.labels[tasks[0]["data"]["influal_id"]]["answer"] == {"boxes": []}
    assert project.labels.labels[tasks[1]["data"]["influal_id"]]["answer"] == {
        "boxes": [{"label": "7", "bbox": [12.0, 12.0, 24.0, 24.0]}]}


def test_csv_boxes_one_row_per_box(started, tmp_path):
    project = copy_of(started, tmp_path)
    record = project.query("random", budget=2)
    a, b = (project.records[i].path for i in record["selected"])
    (tmp_path / "boxes.csv").write_text(f"path,label,x,y,width,height\n{a},1,2,3,10,12\n{a},4,20,20,8,8\n{b},,,,,\n")
    project.import_labels(tmp_path / "boxes.csv", allow_empty=True)
    ida, idb = record["selected"]
    assert project.labels.labels[ida]["answer"]["boxes"] == [{"label": "1", "bbox": [2.0, 3.0, 10.0, 12.0]},
                                                             {"label": "4", "bbox": [20.0, 20.0, 8.0, 8.0]}]
    assert project.labels.labels[idb]["answer"] == {"boxes": []}
    (tmp_path / "bad.csv").write_text(f"path,label,x,y,width,height\n{a},1,2,3,wide,12\n")
    with pytest.raises(LabelImportError, match="give x, y, width and height as numbers"):
        project.import_labels(tmp_path / "bad.csv", allow_unrequested=True)


def test_coco_import_refuses_crowds_unknown_categories_and_wrong_sizes(started, canvas, tmp_path):
    project = copy_of(started, tmp_path)
    _, pool = canvas
    project.query("random", budget=3)
    coco = truth_coco(project, pool, 2)
    coco["annotations"][0]["iscrowd"] = 1
    coco["annotations"][1]["category_id"] = 99
    coco["images"][-1]["width"] = 50
    with pytest.raises(LabelImportError) as info:
        project.import_labels(write_json(tmp_path / "bad.json", coco))
    text = "\n".join(info.value.problems)
    assert "crowd region" in text and "category 99" in text and "has width 50" in text
