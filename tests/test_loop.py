"""The loop: same seed, same selections; an interrupted run resumes to exactly the uninterrupted result."""

import csv
import json

import numpy as np
import pytest
from conftest import blob_splits, mlp_model

from influal.app.run import run_experiment
from influal.core.errors import ConfigError, StateError
from influal.loop import Experiment, initial_labeled
from influal.loop.config import ExperimentConfig
from influal.loop.state import ActiveState, RoundRecord
from influal.settings import TRAIN_PRESETS
from influal.tasks.classification import ClassificationTask


def _config(**kw):
    base = dict(dataset="blobs", model="custom", strategies=("isal", "random"), initial=10, budget=8, rounds=3,
                seeds=2, device="cpu", train=TRAIN_PRESETS["fast"],
                strategy_settings={"isal": dict(scope="weights", lissa_depth=15, lissa_repeats=2, scale=100.0)})
    base.update(kw)
    return ExperimentConfig(**base)


def _run(out, config=None):
    return run_experiment(config or _config(), out, splits=blob_splits(), model_factory=mlp_model)


def _results(out):
    states = {}
    for path in sorted(out.glob("runs/*/seed*/state.json")):
        data = json.loads(path.read_text())
        states[(data["strategy"], data["seed"])] = [(r["round"], r["labeled"], r["selected"], r["metrics"])
                                                    for r in data["rounds"]]
    with open(out / "metrics.csv") as fh:
        rows = [(r["strategy"], r["seed"], r["round"], r["labeled"], r["cost"], r["accuracy"])
                for r in csv.DictReader(fh)]
    return states, rows


def test_run_writes_results_and_every_strategy_of_a_seed_starts_alike(tmp_path):
    states = _run(tmp_path)
    assert {(s, k) for s, k in states} == {("isal", 0), ("isal", 1), ("random", 0), ("random", 1)}
    for seed in (0, 1):
        a, b = states[("isal", seed)], states[("random", seed)]
        assert a.rounds[0].labeled == 10
        assert sorted(a.labeled_ids[:10]) == sorted(b.labeled_ids[:10])
        assert a.rounds[0].metrics == b.rounds[0].metrics  # same seed, same init, same data: same model
    assert states[("isal", 0)].labeled_ids[:10] != states[("isal", 1)].labeled_ids[:10]
    for state in states.values():
        assert len(state.rounds) == 3
        assert [r.labeled for r in state.rounds] == [10, 18, 26]
        assert len(set(state.labeled_ids)) == 26 and not set(state.labeled_ids) & set(state.unlabeled_ids)
        assert state.rounds[-1].selected == []
    for name in ("config.json", "metrics.csv", "report.md", "curves.png"):
        assert (tmp_path / name).exists()
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["strategy", "seed", "round", "labeled", "cost", "accuracy"]
    assert "± " in (tmp_path / "report.md").read_text()


def test_same_seed_gives_same_selections(tmp_path):
    _run(tmp_path / "a")
    _run(tmp_path / "b")
    assert _results(tmp_path / "a") == _results(tmp_path / "b")


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch):
    _run(tmp_path / "straight")

    calls = {"n": 0}
    original = ClassificationTask.train

    def crashing_train(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # mid-way: second strategy of seed 0, round 1
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ClassificationTask, "train", crashing_train)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed")
    monkeypatch.setattr(ClassificationTask, "train", original)
    partial = ActiveState.load(tmp_path / "resumed" / "runs" / "random" / "seed0" / "state.json")
    assert len(partial.rounds) == 1  # the finished round was kept, the interrupted one was not
    _run(tmp_path / "resumed")
    assert _results(tmp_path / "resumed") == _results(tmp_path / "straight")


def test_different_experiment_in_same_folder_is_refused(tmp_path):
    _run(tmp_path, _config(rounds=2))
    with pytest.raises(StateError, match="different experiment"):
        Experiment.prepare(_config(rounds=2, budget=9), tmp_path, splits=blob_splits(), model_factory=mlp_model)


def test_state_round_trip_and_checks(tmp_path):
    state = ActiveState.start("random", 0, initial_labeled(20, 5, seed=0), 20)
    state.add_round(RoundRecord(round=0, labeled=5, cost=5.0, metrics={"accuracy": 0.5}, selected=[state.unlabeled_ids[0]]))
    state.save(tmp_path / "s.json")
    loaded = ActiveState.load(tmp_path / "s.json")
    assert loaded == state
    with pytest.raises(StateError, match="already labeled"):
        loaded.add_round(RoundRecord(round=1, labeled=6, cost=6.0, metrics={}, selected=[loaded.labeled_ids[0]]))
    with pytest.raises(StateError, match="out of order"):
        loaded.add_round(RoundRecord(round=5, labeled=6, cost=6.0, metrics={}))
    assert np.array_equal(initial_labeled(20, 5, 0), initial_labeled(20, 5, 0))


def test_a_saved_config_without_a_newer_setting_or_with_another_memory_layout_resumes(tmp_path):
    _run(tmp_path, _config(rounds=2))
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["strategy_settings"]["isal"]["memory_format"]  # written before the setting existed: its default
    (tmp_path / "config.json").write_text(json.dumps(saved))
    Experiment.prepare(_config(rounds=2), tmp_path, splits=blob_splits(), model_factory=mlp_model)
    isal = {**_config().strategy_settings["isal"], "memory_format": "preserve"}
    other_layout = _config(rounds=2, strategy_settings={"isal": isal})
    Experiment.prepare(other_layout, tmp_path, splits=blob_splits(), model_factory=mlp_model)


@pytest.mark.parametrize("name, argv", [
    ("config_v1_demo.json", ["run", "--dataset", "mnist5k", "--model", "cnn", "--strategies", "isal,random",
                             "--initial", "100", "--budget", "100", "--rounds", "5", "--seeds", "3", "--out", "x"]),
    ("config_v1_detection.json", None),
])
def test_config_files_of_version_1_read_as_the_same_experiment(name, argv):
    """config.json written by influal 0.1 (top-level influence and detection blocks) resumes: it compares equal
    to the config today's command or API builds for the same experiment."""
    from pathlib import Path

    from influal.cli import build_config, make_parser
    from influal.loop.experiment import comparable

    old = json.loads((Path(__file__).parent / "data" / name).read_text())
    if argv is not None:
        new = build_config(make_parser().parse_args(argv)).to_dict()
    else:
        import benchmarks.detection as bench

        new = bench.preset(old["data_root"]).to_dict()
    assert comparable(old) == comparable(new)
    migrated = ExperimentConfig.from_dict(old)
    assert migrated.to_dict()["version"] == 2 and "influence" not in migrated.to_dict()
    if old["task"] == "detection":
        assert migrated.model == "fcos" and migrated.train.warmup_iters == 20 and migrated.train.grad_clip == 10.0
    with pytest.raises(ConfigError, match="config version 3"):
        ExperimentConfig.from_dict({**new, "version": 3})


def test_detection_benchmark_sets_the_pseudo_box_threshold_only_when_asked():
    import benchmarks.detection as bench

    default = bench.build_config(bench.parse_args(["--strategies", "isal"]))
    higher = bench.build_config(bench.parse_args(["--strategies", "isal", "--score-threshold", "0.3"]))
    assert default.task_settings.score_threshold == 0.1 == bench.preset(None, ("isal",)).task_settings.score_threshold
    assert higher.task_settings.score_threshold == 0.3
    assert higher.replace(task_settings=default.task_settings).to_dict() == default.to_dict()
