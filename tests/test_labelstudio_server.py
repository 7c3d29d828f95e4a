"""A real Label Studio server (tests/labelstudio.py): import tasks, annotate through the API, export.

One server for the module (its start costs about 10 s on a migrated template database, a minute the first time).
Skips only where label-studio could not be installed into .venv-labelstudio (see `make labelstudio`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from labelstudio import LabelStudio, LabelStudioError, labelstudio_available, local_file_url, start_server

CLASSIFY = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="single" showInline="true">
    <Choice value="cat"/><Choice value="dog"/>
  </Choices>
</View>"""

RECTANGLES = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="a"/></RectangleLabels>
</View>"""

WIDTH, HEIGHT = 40, 30


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ls-documents")
    (root / "images").mkdir()  # files must lie below a subfolder: Label Studio refuses the root as a storage
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (WIDTH, HEIGHT), colour).save(root / "images" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def labelstudio(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    ok, reason = labelstudio_available()
    if not ok:
        pytest.skip(reason)
    with start_server(data_root, tmp_path_factory.mktemp("ls-work")) as server:
        yield server
    assert server.process.returncode is not None


def choice(label: str) -> dict:
    return {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}


def rectangle(x: float, y: float, w: float, h: float) -> dict:
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["a"]}}


def test_local_files_are_served_once_a_storage_covers_them(labelstudio: LabelStudio, data_root: Path):
    pid = labelstudio.create_project("local files", CLASSIFY)
    url = local_file_url("images/0.png")
    with pytest.raises(LabelStudioError, match="HTTP 404"):
        labelstudio.fetch(url)  # no storage covers it yet
    labelstudio.connect_local_files(pid, "images")
    assert labelstudio.fetch(url) == (data_root / "images" / "0.png").read_bytes()
    with pytest.raises(LabelStudioError, match="cannot be the same as LOCAL_FILES_DOCUMENT_ROOT"):
        labelstudio.connect_local_files(pid, ".")


def test_classification_round_trip(labelstudio: LabelStudio, data_root: Path):
    pid = labelstudio.create_project("influal classification", CLASSIFY)
    labelstudio.connect_local_files(pid, "images")
    tasks = [{"data": {"image": local_file_url(f"images/{i}.png"), "influal_id": 7 + i},
              "predictions": [{"model_version": "influal-round-0", "score": 0.25 + i / 10, "result": [choice("cat")]}]}
             for i in range(2)]
    imported = labelstudio.import_tasks(pid, tasks)
    assert imported["task_count"] == 2 and imported["prediction_count"] == 2

    stored = labelstudio.tasks(pid)
    assert [t["data"] for t in stored] == [t["data"] for t in tasks]
    assert all(t["total_predictions"] == 1 for t in stored)
    assert labelstudio.fetch(stored[0]["data"]["image"]) == (data_root / "images" / "0.png").read_bytes()

    labelled, skipped = stored
    assert labelstudio.annotate(labelled["id"], [choice("dog")])["was_cancelled"] is False
    assert labelstudio.skip(skipped["id"])["was_cancelled"] is True

    exported = {t["data"]["influal_id"]: t for t in labelstudio.export(pid)}
    assert set(exported) == {7, 8}
    assert exported[7]["data"] == tasks[0]["data"] and exported[8]["data"] == tasks[1]["data"]

    (dog,) = exported[7]["annotations"]
    assert dog["was_cancelled"] is False
    assert [r["value"]["choices"] for r in dog["result"]] == [["dog"]]
    assert dog["result"][0]["from_name"] == "label" and dog["result"][0]["type"] == "choices"
    assert dog["prediction"]["result"] == [choice("cat")]  # what the annotator saw, copied in
    assert exported[7]["total_annotations"] == 1 and exported[7]["cancelled_annotations"] == 0

    (cancelled,) = exported[8]["annotations"]
    assert cancelled["was_cancelled"] is True and cancelled["result"] == []
    assert exported[8]["total_annotations"] == 0 and exported[8]["cancelled_annotations"] == 1

    # The JSON export lists predictions by id only.
    assert all(isinstance(p, int) for t in exported.values() for p in t["predictions"])


def test_rectangle_round_trip(labelstudio: LabelStudio):
    pid = labelstudio.create_project("influal detection", RECTANGLES)
    labelstudio.connect_local_files(pid, "images")
    task = {"data": {"image": local_file_url("images/1.png"), "influal_id": 11},
            "predictions": [{"model_version": "influal-round-0", "score": 0.5,
                             "result": [rectangle(10.0, 20.0, 50.0, 100 / 3)]}]}
    labelstudio.import_tasks(pid, [task])
    (stored,) = labelstudio.tasks(pid)
    boxes = [rectangle(12.5, 10.0, 25.0, 40.0), rectangle(50.0, 50.0, 50.0, 50.0)]
    labelstudio.annotate(stored["id"], boxes)

    (exported,) = labelstudio.export(pid)
    assert exported["data"] == task["data"]
    (annotation,) = exported["annotations"]
    assert annotation["was_cancelled"] is False
    got = annotation["result"]
    assert [r["type"] for r in got] == ["rectanglelabels"] * 2
    assert [(r["original_width"], r["original_height"]) for r in got] == [(WIDTH, HEIGHT)] * 2
    assert [[r["value"][k] for k in ("x", "y", "width", "height")] for r in got] == [[12.5, 10.0, 25.0, 40.0],
                                                                                       [50.0, 50.0, 50.0, 50.0]]
    assert [r["value"]["rectanglelabels"] for r in got] == [["a"], ["a"]]


def test_export_holds_only_annotated_tasks_unless_asked_for_all(labelstudio: LabelStudio):
    pid = labelstudio.create_project("unlabelled", CLASSIFY)
    labelstudio.import_tasks(pid, [{"data": {"image": local_file_url("images/0.png"), "influal_id": 1}},
                                   {"data": {"image": local_file_url("images/1.png"), "influal_id": 2}}])
    assert labelstudio.export(pid) == []  # what the UI's Export button downloads
    first = labelstudio.tasks(pid)[0]
    labelstudio.annotate(first["id"], [choice("cat")])
    assert [t["data"]["influal_id"] for t in labelstudio.export(pid)] == [1]
    everything = labelstudio.export(pid, all_tasks=True)
    assert sorted(t["data"]["influal_id"] for t in everything) == [1, 2]
    assert [t["annotations"] for t in everything if t["data"]["influal_id"] == 2] == [[]]


def test_availability_reports_why_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import labelstudio as module

    monkeypatch.setattr(module, "INSTALLED", tmp_path / ".installed")
    monkeypatch.setattr(module, "FAILED", tmp_path / ".failed")
    ok, reason = module.labelstudio_available()
    assert not ok and "make labelstudio" in reason
    (tmp_path / ".failed").write_text("ERROR: No matching distribution found for label-studio==9.9\n")
    ok, reason = module.labelstudio_available()
    assert not ok and "No matching distribution" in reason
