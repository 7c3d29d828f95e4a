"""Every registered task that offers the labeling workflow obeys the LabelSchema contract: its Label Studio config
is well-formed and names the controls its results use; a prediction sent to Label Studio and accepted there comes
back as the same answer; answers are checked against the image; a task without a schema is refused at init."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from influal.api import ImageRecord, LabelSchema
from influal.core.errors import ConfigError
from influal.project import Project
from influal.tasks import TASKS

RECORD = ImageRecord(id=3, path="a/b.png", width=64, height=48, size=100, hash="0" * 32)
CLASSES = ["cat", "dog", "bird & fish"]

# a prediction per schema kind, in the task's answer form plus its score fields
PREDICTIONS = {
    "choices": {"label": "dog", "confidence": 0.7},
    "rectanglelabels": {"boxes": [{"label": "cat", "bbox": [4.0, 6.0, 20.0, 12.0], "score": 0.9},
                                  {"label": "bird & fish", "bbox": [30.0, 2.0, 33.0, 40.0], "score": 0.4}],
                        "confidence": 0.9},
}


def _schemas():
    out = []
    for name, plugin in TASKS.items():
        schema = plugin.labeling()
        if schema is not None:
            out.append(pytest.param(schema, id=name))
    return out


def _answer_part(prediction: dict) -> dict:
    """The answer a prediction proposes: without confidence and box scores."""
    out = {k: v for k, v in prediction.items() if k != "confidence"}
    if "boxes" in out:
        out["boxes"] = [{k: v for k, v in b.items() if k != "score"} for b in out["boxes"]]
    return out


@pytest.mark.parametrize("schema", _schemas())
def test_the_label_config_is_xml_with_a_label_control_on_the_image(schema: LabelSchema):
    root = ET.fromstring(schema.label_config(CLASSES))
    image = root.find("Image")
    assert image is not None and image.get("name") == "image" and image.get("value") == "$image"
    controls = [el for el in root if el.get("name") == "label"]
    assert len(controls) == 1 and controls[0].get("toName") == "image"
    assert [child.get("value") for child in controls[0]] == CLASSES  # quoted, in order


@pytest.mark.parametrize("schema", _schemas())
def test_an_accepted_pre_annotation_comes_back_as_the_same_answer(schema: LabelSchema):
    prediction = PREDICTIONS[schema.tool_kind]
    result = schema.to_label_studio(prediction, RECORD)
    assert all(item["from_name"] == "label" and item["to_name"] == "image" and item["type"] == schema.tool_kind
               for item in result)
    answer, problems = schema.from_label_studio(result, RECORD, CLASSES)
    assert problems == []
    expected = _answer_part(prediction)
    if "boxes" in expected:
        assert [b["label"] for b in answer["boxes"]] == [b["label"] for b in expected["boxes"]]
        for got, want in zip(answer["boxes"], expected["boxes"]):
            assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
    else:
        assert answer == expected
    assert schema.check_answer(answer, RECORD, CLASSES) == []
    assert schema.cost(answer) >= 1 and sum(schema.class_counts(answer).values()) >= 1
    assert isinstance(schema.describe(prediction), str) and schema.csv_columns(prediction)


@pytest.mark.parametrize("schema", _schemas())
def test_an_unknown_class_is_a_problem(schema: LabelSchema):
    prediction = PREDICTIONS[schema.tool_kind]
    result = schema.to_label_studio(prediction, RECORD)
    answer, problems = schema.from_label_studio(result, RECORD, ["only-this"])
    assert problems and all("not among the project's 1 classes" in p for p in problems)


def test_a_task_without_a_label_schema_is_refused_at_init(tmp_path, monkeypatch):
    plugin = TASKS.get("classification")
    monkeypatch.setattr(type(plugin), "labeling", lambda self: None)
    with pytest.raises(ConfigError, match="offers no labeling workflow"):
        Project.init(tmp_path / "p", task="classification", images=tmp_path, classes=["a", "b"])
    assert not (tmp_path / "p").exists()
