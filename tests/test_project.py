"""The labeling workflow on a tiny folder of real digit images: init, add, query (cold start, then ISAL), import,
status, through the Python API."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from project_utils import CLASSES, answer_csv, batch_rows, digit_folder, snapshot

from influal.core.errors import ConfigError, DataError, StateError
from influal.project import Project
from influal.settings import TrainConfig

FAST = TrainConfig.preset("fast").replace(epochs=4)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-images")
    truth = digit_folder(root, n=120)
    (root / "digits" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    (root / "notes.txt").write_text("not an image")
    return root, truth


@pytest.fixture(scope="module")
def labeled(images, tmp_path_factory):
    """A project after a cold-start query (random, 20 % reserved for the reference set) and its import."""
    root, truth = images
    path = tmp_path_factory.mktemp("projects") / "digits"
    project = Project.init(path, task="classification", images=root, classes=CLASSES)
    project.query("random", budget=50)
    project.import_labels(answer_csv(path.parent / "round1.csv", batch_rows(project, 1), truth))
    return path


def copy_of(path, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(path, dest)
    return Project(dest)


def test_init_records_every_decodable_image_once_with_a_stable_id(images, tmp_path):
    root, truth = images
    project = Project.init(tmp_path / "p", task="classification", images=root, classes=CLASSES)
    paths = [r.path for r in project.records]
    assert paths == sorted(truth) and [r.id for r in project.records] == list(range(len(truth)))
    assert project.rejected == [{"path": "digits/broken.png", "reason": project.rejected[0]["reason"]}]
    first = project.records[0]
    data = (root / first.path).read_bytes()
    assert first.size == len(data) and (first.width, first.height) == (28, 28) and len(first.hash) == 32
    settings = project.meta["image_settings"]
    assert settings["image_size"] == 28 and settings["channels"] == 1
    status = project.status(plot=False)
    assert status["unlabeled"] == 120 and status["labeled"] == {"train": 0, "val": 0} and status["rejected"] == 1


def test_init_refuses_before_writing_anything(images, tmp_path):
    root, _ = images
    with pytest.raises(ConfigError, match="give the classes"):
        Project.init(tmp_path / "p", task="classification", images=root)
    with pytest.raises(ConfigError, match="listed twice"):
        Project.init(tmp_path / "p", task="classification", images=root, classes=["a", "a"])
    with pytest.raises(DataError, match="does not exist"):
        Project.init(tmp_path / "p", task="classification", images=tmp_path / "nowhere", classes=CLASSES)
    assert not (tmp_path / "p").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StateError, match="not empty"):
        Project.init(tmp_path / "full", task="classification", images=root, classes=CLASSES)
    assert [p.name for p in tmp_path.iterdir()] == ["full"]  # no temporary folder left behind


def test_init_takes_labels_and_a_reference_set_and_reads_the_classes_from_them(images, tmp_path):
    root, truth = images
    paths = sorted(truth)
    labels = answer_csv(tmp_path / "labels.csv", paths[:30], truth)
    val = answer_csv(tmp_path / "val.csv", paths[30:50], truth)
    project = Project.init(tmp_path / "p", task="classification", images=root, labels=labels, val=val)
    assert project.classes == sorted({truth[p] for p in paths[:50]})
    assert len(project.labels.ids("train")) == 30 and len(project.labels.ids("val")) == 20
    by_path = {r.path: r.id for r in project.records}
    assert project.labels.labels[by_path[paths[0]]] == {"split": "train", "answer": {"label": truth[paths[0]]},
                                                        "source": str(labels), "round": 0}


def test_add_keeps_every_existing_id_and_refuses_changed_files(images, tmp_path):
    root, truth = images
    own = tmp_path / "imgs"
    shutil.copytree(root / "digits", own / "digits")
    project = Project.init(tmp_path / "p", task="classification", images=own, classes=CLASSES)
    before = [r.to_dict() for r in project.records]
    Image.new("L", (28, 28), 255).save(own / "digits" / "a-new-one.png")  # sorts before every existing file
    (own / "more").mkdir()
    Image.new("L", (28, 28), 0).save(own / "more" / "z.png")
    assert project.add() == 2
    again = Project(tmp_path / "p")
    assert [r.to_dict() for r in again.records[:len(before)]] == before
    assert [(r.id, r.path) for r in again.records[len(before):]] == [(120, "digits/a-new-one.png"), (121, "more/z.png")]
    assert again.add() == 0
    files = snapshot(tmp_path / "p")
    Image.new("L", (28, 28), 128).save(own / before[5]["path"])
    with pytest.raises(DataError, match="changed on disk"):
        again.add()
    assert snapshot(tmp_path / "p") == files
    with pytest.raises(ConfigError, match="not under the project's image folder"):
        again.add(tmp_path)


def test_a_cold_start_query_reserves_a_reference_share_and_writes_the_batch_files(images, tmp_path):
    root, _ = images
    project = Project.init(tmp_path / "p", task="classification", images=root, classes=CLASSES)
    with pytest.raises(ConfigError, match="no training labels yet"):
        project.query("isal", budget=20)
    with pytest.raises(ConfigError, match="exceeds the 120 images"):
        project.query("random", budget=121)
    record = project.query("random", budget=20)
    folder = project.store.query_dir(1)
    assert record["round"] == 1 and not record["trained"] and record["metrics"] == {}
    assert len(record["selected"]) == 16 and len(record["val_reserved"]) == 4
    rows = batch_rows(project, 1)
    assert [r["rank"] for r in rows] == [str(k) for k in range(1, 21)]
    assert [r["split"] for r in rows] == ["train"] * 16 + ["val"] * 4
    assert [int(r["id"]) for r in rows] == record["selected"] + record["val_reserved"]
    assert all(r["predicted"] == "" and r["score"] == "" for r in rows)  # no model yet: no predictions, no scores
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["influal_id"] for t in tasks] == [int(r["id"]) for r in rows]
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d={root.name}/{rows[0]['path']}"
    assert "predictions" not in tasks[0]
    xml = (folder / "labeling-config.xml").read_text()
    assert '<Choices name="label" toName="image"' in xml and all(f'<Choice value="{c}"/>' in xml for c in CLASSES)
    with Image.open(folder / "contact-sheet.png") as sheet:
        assert sheet.size[0] > 0
    assert {p["split"] for p in project.labels.pending.values()} == {"train", "val"}
    assert len(project.labels.pending) == 20
    # the next query excludes the pending batch; ISAL still has no labels to train on
    second = project.query("random", budget=10, val_share=0.0)
    assert not set(second["selected"]) & set(record["selected"] + record["val_reserved"])


def test_isal_needs_a_reference_set_and_says_how_to_get_one(images, tmp_path):
    root, truth = images
    labels = answer_csv(tmp_path / "labels.csv", sorted(truth)[:30], truth)
    project = Project.init(tmp_path / "p", task="classification", images=root, classes=CLASSES, labels=labels)
    with pytest.raises(ConfigError, match="needs a labeled reference"):
        project.query("isal", budget=10)
    assert project.store.rounds() == []


def test_isal_query_trains_scores_every_candidate_and_predicts_the_batch(labeled, tmp_path):
    project = copy_of(labeled, tmp_path)
    assert len(project.labels.ids("train")) == 40 and len(project.labels.ids("val")) == 10
    record = project.query("isal", budget=15, train=FAST, strategy_settings={"solver": "exact"})
    assert record["round"] == 2 and record["trained"] and record["val_reserved"] == []
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["candidates"] == 70
    rows = batch_rows(project, 2)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)  # lower is better: rank 1 first
    assert scores[-1] <= record["scores"]["mean"] and record["scores"]["min"] == scores[0]
    assert all(r["predicted"] in CLASSES and 0.0 < float(r["confidence"]) <= 1.0 for r in rows)
    assert (project.store.query_dir(2) / "model.pt").is_file()
    tasks = json.loads((project.store.query_dir(2) / "tasks.json").read_text())
    pre = tasks[0]["predictions"][0]
    assert pre["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                              "value": {"choices": [rows[0]["predicted"]]}}]
    assert pre["score"] == pytest.approx(float(rows[0]["confidence"]))


def test_the_checkpoint_reloads_to_the_same_model_and_batch(labeled, tmp_path):
    """A finished round's model.pt, loaded with weights_only=True, is the trained model: the selection repeats."""
    first = copy_of(labeled, tmp_path)
    record = first.query("isal", budget=10, train=FAST)
    shutil.copytree(first.path, tmp_path / "again")
    again = Project(tmp_path / "again")
    (again.store.query_dir(2) / "query.json").unlink()  # as if killed after training, before the round was recorded
    resumed = again.query("isal", budget=10, train=FAST)
    assert resumed["selected"] == record["selected"] and resumed["metrics"] == record["metrics"]
    assert (again.store.query_dir(2) / "batch.csv").read_bytes() == (first.store.query_dir(2) / "batch.csv").read_bytes()


def test_status_counts_costs_and_plots_the_metric_per_round(labeled, tmp_path):
    project = copy_of(labeled, tmp_path)
    project.query("margin", budget=10, train=FAST)
    status = project.status()
    assert status["labeled"] == {"train": 40, "val": 10} and status["pending"] == {"train": 10, "val": 0}
    assert status["unlabeled"] == 60 and status["cost"] == {"train": 40.0, "val": 10.0}
    assert sum(c["train"] for c in status["per_class"].values()) == 40
    assert [r["round"] for r in status["rounds"]] == [1, 2]
    assert "accuracy" in status["rounds"][1]["metrics"] and status["rounds"][0]["metrics"] == {}
    assert (project.path / "curves.png").is_file() and status["curves"] == str(project.path / "curves.png")
    text = "\n".join(status["lines"])
    assert "pending 10" in text and "last query: round 2, margin" in text


@pytest.mark.parametrize("strategy", ["coreset", "badge", "entropy"])
def test_other_strategies_run_a_query(labeled, tmp_path, strategy):
    project = copy_of(labeled, tmp_path)
    record = project.query(strategy, budget=8, train=FAST)
    assert len(record["selected"]) == 8 and len(set(record["selected"])) == 8
    assert not set(record["selected"]) & set(project.labels.labels)


def test_weights_start_the_model_and_no_train_uses_them_as_they_are(labeled, tmp_path):
    project = copy_of(labeled, tmp_path)
    project.query("isal", budget=5, train=FAST)
    weights = project.store.query_dir(2) / "model.pt"
    shutil.copy(weights, tmp_path / "w.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read as a state dict"):
        project.query("isal", budget=5, weights=str(tmp_path / "junk.pt"), no_train=True)
    lines = []
    record = project.query("margin", budget=5, weights=str(tmp_path / "w.pt"), no_train=True, log=lines.append)
    assert not record["trained"] and any("loaded" in line for line in lines)
    assert all(r["predicted"] in CLASSES for r in batch_rows(project, 3))


def test_a_project_is_read_only_through_its_own_files(labeled, tmp_path):
    project = copy_of(labeled, tmp_path)
    (project.path / "labels.json").write_text("{ not json")
    with pytest.raises(StateError, match="cannot be read"):
        Project(project.path)
    with pytest.raises(StateError, match="is missing"):
        Project(tmp_path)


def test_the_pool_is_streamed_from_disk(labeled, tmp_path):
    """The project's data set holds paths and labels, never decoded pixels of the whole pool."""
    project = copy_of(labeled, tmp_path)
    dataset = project.dataset()
    x, y = dataset.get_batch(np.arange(5))
    assert tuple(x.shape) == (5, 1, 28, 28) and (y[:5] >= -1).all()
    assert not any(isinstance(v, np.ndarray) and v.size >= 120 * 28 * 28 for v in vars(dataset).values())


def test_commands_reread_the_project_under_its_lock_so_nothing_is_lost(images, tmp_path):
    """Two Project objects on one folder (two terminals): an import through one is not undone by a query or an
    import through the other, which read the project before it."""
    root, truth = images
    path = tmp_path / "p"
    Project.init(path, task="classification", images=root, classes=CLASSES)
    first, second = Project(path), Project(path)
    first.query("random", budget=10)
    second.import_labels(answer_csv(tmp_path / "a.csv", batch_rows(Project(path), 1), truth))  # read before the query
    first.query("random", budget=10, val_share=0.0)  # its labels were read before the import
    on_disk = Project(path)
    assert len(on_disk.labels.labels) == 10 and len(on_disk.labels.pending) == 10
    assert not set(on_disk.labels.pending) & set(on_disk.labels.labels)
