"""The round trip against a real Label Studio server: influal query -> tasks.json and labeling-config.xml into a
Label Studio project -> annotations made through its API, as annotators would -> Label Studio's own JSON export ->
influal import. Classification (choices, with the model's pre-annotations) and detection (rectangles in percent).

One server for the module (tests/labelstudio.py); skips only where label-studio could not be installed into
.venv-labelstudio (`make labelstudio`).
"""

from __future__ import annotations

import json

import pytest
from detection_utils import one_thread
from project_utils import CLASSES, digit_folder, snapshot, write_json

from labelstudio import labelstudio_available, start_server
from influal.project import LabelImportError, Project
from influal.settings import TrainConfig
from influal.tasks.detection.datasets.canvas import CanvasSpec, write_digit_canvas

FAST = TrainConfig.preset("fast").replace(epochs=4)


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """Label Studio's document root; the projects' image folders lie below it (its storages must)."""
    return tmp_path_factory.mktemp("ls-documents")


@pytest.fixture(scope="module")
def server(documents, tmp_path_factory):
    ok, reason = labelstudio_available()
    if not ok:
        pytest.skip(reason)
    with start_server(documents, tmp_path_factory.mktemp("ls-work")) as ls:
        yield ls


def _send(ls, project, round_index: int, images) -> tuple[int, list[dict]]:
    """A Label Studio project for one query's batch, as a user sets it up: its labeling config, a local-files
    storage on the image folder, and the batch's tasks.json imported."""
    folder = project.store.query_dir(round_index)
    pid = ls.create_project(f"{project.name} round {round_index}", (folder / "labeling-config.xml").read_text())
    ls.connect_local_files(pid, images)
    tasks = json.loads((folder / "tasks.json").read_text())
    assert ls.import_tasks(pid, tasks)["task_count"] == len(tasks)
    return pid, ls.tasks(pid)


def _choice(label):
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def test_classification_round_trip_through_label_studio(server, documents, tmp_path):
    images = documents / "own"
    truth = digit_folder(images, n=60)
    project = Project.init(tmp_path / "p", task="classification", images=images, classes=CLASSES)
    project.query("random", budget=12)
    pid, tasks = _send(server, project, 1, images)
    first = tasks[0]["data"]
    assert server.fetch(first["image"]) == (images / first["path"]).read_bytes()  # Label Studio shows the image
    for task in tasks[1:]:  # the annotators: one skips an image, the others answer
        server.annotate(task["id"], _choice(truth[task["data"]["path"]]))
    server.skip(tasks[0]["id"])
    export = write_json(tmp_path / "export-1.json", server.export(pid))
    before = snapshot(project.path)
    with pytest.raises(LabelImportError, match="was skipped"):
        project.import_labels(export)
    assert snapshot(project.path) == before
    result = project.import_labels(export, partial=True)
    assert result["merged"] == 11 and result["left_pending"] == 1 and result["pending"] == 1
    assert result["by_split"] == {"train": 9, "val": 2}
    for task in tasks[1:]:
        entry = project.labels.labels[task["data"]["influal_id"]]
        assert entry["answer"] == {"label": truth[task["data"]["path"]]}
        assert entry["split"] == task["data"]["influal_split"]

    # a trained model's query: its predictions reach the annotators as pre-annotations
    record = project.query("isal", budget=8, train=FAST)
    pid, tasks = _send(server, project, 2, images)
    predicted = {t["data"]["influal_id"]: t for t in json.loads(
        (project.store.query_dir(2) / "tasks.json").read_text())}
    accepted = 0
    for task in tasks:
        path = task["data"]["path"]
        guess = predicted[task["data"]["influal_id"]]["predictions"][0]["result"]
        if guess[0]["value"]["choices"] == [truth[path]]:
            server.annotate(task["id"], guess)  # the annotator accepts the pre-annotation
            accepted += 1
        else:
            server.annotate(task["id"], _choice(truth[path]))
    assert {t["data"]["influal_id"] for t in tasks} == set(record["selected"])
    result = project.import_labels(write_json(tmp_path / "export-2.json", server.export(pid)))
    assert result["merged"] == 8 and result["pending"] == 1
    assert all(project.labels.labels[i]["answer"] == {"label": truth[project.records[i].path]}
               for i in record["selected"])


def test_detection_round_trip_through_label_studio(server, documents, tmp_path):
    canvas = write_digit_canvas(documents / "canvas", CanvasSpec(pool=20, val=5, test=1, image_size=48,
                                                                 min_scale=12, max_scale=18, seed=5))
    pool = json.loads((canvas / "pool.json").read_text())
    project = Project.init(tmp_path / "det", task="detection", images=canvas, val=canvas / "val.json")
    with one_thread():
        project.query("random", budget=5)
    pid, tasks = _send(server, project, 1, canvas)
    by_file = {im["file_name"]: im for im in pool["images"]}
    names = {c["id"]: c["name"] for c in pool["categories"]}
    expected = {}
    for task in tasks:
        image = by_file.get(task["data"]["path"])
        if image is None:  # a test canvas: the annotator labels it too
            server.annotate(task["id"], [])
            expected[task["data"]["influal_id"]] = []
            continue
        w, h = image["width"], image["height"]
        boxes = [a for a in pool["annotations"] if a["image_id"] == image["id"]]
        result = [{"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": w,
                   "original_height": h, "image_rotation": 0,
                   "value": {"x": 100 * a["bbox"][0] / w, "y": 100 * a["bbox"][1] / h, "width": 100 * a["bbox"][2] / w,
                             "height": 100 * a["bbox"][3] / h, "rotation": 0,
                             "rectanglelabels": [names[a["category_id"]]]}} for a in boxes]
        server.annotate(task["id"], result)
        expected[task["data"]["influal_id"]] = [(names[a["category_id"]], a["bbox"]) for a in boxes]
    export = write_json(tmp_path / "export.json", server.export(pid))
    if any(not v for v in expected.values()):
        with pytest.raises(LabelImportError, match="--allow-empty"):
            project.import_labels(export)
    project.import_labels(export, allow_empty=True)
    for i, boxes in expected.items():
        got = project.labels.labels[i]["answer"]["boxes"]
        assert [b["label"] for b in got] == [name for name, _ in boxes]
        for b, (_, bbox) in zip(got, boxes):
            assert b["bbox"] == pytest.approx(bbox, abs=1e-2)
