"""Importing answers: every kind of bad answer is refused with one line naming it, and leaves the project unchanged
byte for byte; good ones merge atomically, whatever the format (CSV, Label Studio JSON export, COCO)."""

from __future__ import annotations

import json
import shutil

import pytest
from project_utils import CLASSES, answer_csv, batch_rows, digit_folder, label_studio_export, snapshot, write_json

from influal.cli import main
from influal.core.errors import DataError
from influal.project import LabelImportError, Project


@pytest.fixture(scope="module")
def queried(tmp_path_factory):
    """A project with one pending cold-start batch of 20 (16 train, 4 val)."""
    root = tmp_path_factory.mktemp("imgs")
    truth = digit_folder(root, n=60)
    path = tmp_path_factory.mktemp("projects") / "p"
    project = Project.init(path, task="classification", images=root, classes=CLASSES)
    project.query("random", budget=20)
    return path, truth


@pytest.fixture
def project(queried, tmp_path):
    path, truth = queried
    shutil.copytree(path, tmp_path / "p")
    return Project(tmp_path / "p"), truth


def _tasks(project):
    return json.loads((project.store.query_dir(1) / "tasks.json").read_text())


def _choice(label):
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def _refused(project, file, match, **options):
    before = snapshot(project.path)
    with pytest.raises(LabelImportError) as info:
        project.import_labels(file, **options)
    assert snapshot(project.path) == before
    assert any(match in line for line in info.value.problems), info.value.problems
    assert str(file) in info.value.problems[0]
    return info.value


def test_a_label_studio_export_merges_every_answer_into_the_split_it_was_asked_for(project, tmp_path):
    project, truth = project
    tasks = _tasks(project)
    export = label_studio_export(tasks, {k: _choice(truth[t["data"]["path"]]) for k, t in enumerate(tasks)})
    result = project.import_labels(write_json(tmp_path / "export.json", export))
    assert result["format"] == "label-studio" and result["merged"] == 20
    assert result["by_split"] == {"train": 16, "val": 4} and result["pending"] == 0
    for t in tasks:
        entry = project.labels.labels[t["data"]["influal_id"]]
        assert entry["answer"] == {"label": truth[t["data"]["path"]]} and entry["split"] == t["data"]["influal_split"]
        assert entry["round"] == 1
    again = Project(project.path)  # what was merged is on disk
    assert again.labels.labels == project.labels.labels
    # the same file again changes nothing and says so
    before = snapshot(project.path)
    assert project.import_labels(tmp_path / "export.json")["unchanged"] == 20
    assert snapshot(project.path) == before


def test_tasks_are_matched_by_url_when_they_carry_no_influal_id(project, tmp_path):
    project, truth = project
    tasks = _tasks(project)
    for t in tasks:
        t["data"] = {"image": t["data"]["image"]}  # tasks a user built by hand
    tasks[1]["data"]["image"] = "http://localhost:8080/data/upload/3/" + tasks[1]["data"]["image"].split("d=")[1]
    paths = [project.records[int(r["id"])].path for r in batch_rows(project, 1)]
    export = label_studio_export(tasks, {k: _choice(truth[p]) for k, p in enumerate(paths)})
    assert project.import_labels(write_json(tmp_path / "e.json", export))["merged"] == 20


@pytest.mark.parametrize("case, match", [
    ("unknown image", "is not an image of this project"),
    ("unknown id", "is not an image of this project"),
    ("another project's id", "was it exported from another project"),
    ("unknown class", "is not among the project's 10 classes"),
    ("two classes", "choose one"),
    ("empty annotation", "is empty"),
    ("skipped", "was skipped"),
    ("unanswered", "was unanswered"),
    ("disagreeing annotators", "annotations that disagree"),
    ("conflicting duplicate", "differently; keep one answer"),
    ("not a task", "is not a Label Studio task"),
])
def test_every_bad_label_studio_answer_is_refused_and_nothing_changes(project, tmp_path, case, match):
    project, truth = project
    tasks = _tasks(project)
    answers = {k: _choice(truth[t["data"]["path"]]) for k, t in enumerate(tasks)}
    export = label_studio_export(tasks, answers)
    first = export[0]
    if case == "unknown image":
        first["data"] = {"image": "/data/local-files/?d=digits/elsewhere.png"}
    elif case == "unknown id":
        first["data"]["influal_id"] = 9999
    elif case == "another project's id":
        first["data"]["path"] = "digits/other.png"
    elif case == "unknown class":
        first["annotations"][0]["result"] = _choice("eleven")
    elif case == "two classes":
        first["annotations"][0]["result"][0]["value"]["choices"] = ["1", "2"]
    elif case == "empty annotation":
        first["annotations"][0]["result"] = []
    elif case == "skipped":
        first["annotations"][0]["was_cancelled"] = True
    elif case == "unanswered":
        first["annotations"] = []
    elif case == "disagreeing annotators":
        other = "1" if truth[first["data"]["path"]] != "1" else "2"
        first["annotations"].append({"id": 7, "was_cancelled": False, "result": _choice(other)})
    elif case == "conflicting duplicate":
        dup = json.loads(json.dumps(first))
        dup["id"] = 99
        dup["annotations"][0]["result"] = _choice("1" if truth[first["data"]["path"]] != "1" else "2")
        export.append(dup)
    elif case == "not a task":
        export[0] = {"image": "x"}
        export.append({"annotations": [], "id": 5})
    error = _refused(project, write_json(tmp_path / "bad.json", export), match)
    assert "nothing was merged" in str(error)


def test_skipped_and_unanswered_tasks_stay_pending_with_partial(project, tmp_path):
    project, truth = project
    tasks = _tasks(project)
    answers = {k: _choice(truth[t["data"]["path"]]) for k, t in enumerate(tasks) if k >= 2}
    answers[0] = None  # skipped; task 1 unanswered
    export = write_json(tmp_path / "e.json", label_studio_export(tasks, answers))
    _refused(project, export, "was skipped")
    result = project.import_labels(export, partial=True)
    assert result["merged"] == 18 and result["left_pending"] == 2 and result["pending"] == 2
    assert set(project.labels.pending) == {tasks[0]["data"]["influal_id"], tasks[1]["data"]["influal_id"]}


def test_unrequested_answers_need_a_flag_and_are_counted(project, tmp_path):
    project, truth = project
    asked = {int(r["id"]) for r in batch_rows(project, 1)}
    others = [r.path for r in project.records if r.id not in asked][:5]
    file = answer_csv(tmp_path / "extra.csv", others, truth)
    _refused(project, file, "was not asked for by a query; import with --allow-unrequested")
    result = project.import_labels(file, allow_unrequested=True, split="val")
    assert result["unrequested"] == 5 and result["by_split"] == {"train": 0, "val": 5}
    assert len(project.labels.ids("val")) == 5


def test_a_label_is_never_silently_overwritten(project, tmp_path):
    project, truth = project
    rows = batch_rows(project, 1)
    project.import_labels(answer_csv(tmp_path / "a.csv", rows, truth))
    wrong = {r["path"]: ("1" if truth[r["path"]] != "1" else "2") for r in rows[:1]}
    _refused(project, answer_csv(tmp_path / "b.csv", rows[:1], wrong), "already labeled differently")


@pytest.mark.parametrize("content, match", [
    ("file,class\nx.png,1\n", "needs a header with the columns path and label"),
    ("path,label\ndigits/nowhere.png,1\n", "is not an image of this project"),
    ("path,label\n{p},\n", "has an empty label"),
    ("path,label\n{p},7\n{p},8\n", "different labels"),
    ("path,label\n{p},cat\n", "is not among the project's 10 classes"),
    ("path,label\n,1\n", "has an empty path"),
    ("path,label\n{p},1,extra\n", "fields, but the header has 2"),
])
def test_every_bad_csv_answer_is_refused_and_nothing_changes(project, tmp_path, content, match):
    project, _ = project
    p = batch_rows(project, 1)[0]["path"]
    file = tmp_path / "bad.csv"
    file.write_text(content.format(p=p))
    before = snapshot(project.path)
    with pytest.raises(DataError, match=match) if "header" in match else _raises_import(match):
        project.import_labels(file)
    assert snapshot(project.path) == before


class _raises_import:
    def __init__(self, match):
        self.match = match

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        assert kind is LabelImportError, f"expected LabelImportError, got {kind}"
        assert any(self.match in line for line in exc.problems), exc.problems
        return True


def test_files_that_are_no_label_file_are_refused_in_one_line(project, tmp_path):
    project, _ = project
    for name, text, match in (("x.json", "{not json", "is not valid JSON"),
                              ("y.json", json.dumps({"a": 1}), "neither a Label Studio JSON export"),
                              ("z.json", json.dumps([{"image": "a.png", "label": "1"}]), "JSON-MIN")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=match):
            project.import_labels(tmp_path / name)
    with pytest.raises(DataError, match="does not exist"):
        project.import_labels(tmp_path / "none.csv")


def test_the_cli_prints_one_line_per_problem_and_exits_2(project, tmp_path, capsys):
    project, truth = project
    rows = batch_rows(project, 1)
    lines = ["path,label"] + [f"{r['path']},nope{k}" for k, r in enumerate(rows)] + ["digits/zz.png,1"]
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    before = snapshot(project.path)
    assert main(["import", str(project.path), str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"influal: error: 21 problem(s) in {tmp_path / 'bad.csv'}; nothing was merged"
    assert len(err) == 22 and err[-1] == "... and 1 more problem(s)"  # 20 shown, then the count
    assert all(str(tmp_path / "bad.csv") in line for line in err[1:21])
    assert snapshot(project.path) == before
    assert main(["import", str(project.path), str(answer_csv(tmp_path / "ok.csv", rows, truth))]) == 0
    assert "merged 20 answer(s)" in capsys.readouterr().out
