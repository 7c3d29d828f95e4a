"""State and config files are checked, not trusted; a folder records what it ran on and refuses other data, another
model or another recipe, naming the field; it can be extended with more strategies and seeds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from influal.app.run import run_experiment
from influal.cli import main
from influal.core.errors import ConfigError, StateError
from influal.loop import Experiment
from influal.loop.config import ExperimentConfig
from influal.report import collect_rows
from influal.settings import TRAIN_PRESETS

from conftest import blob_splits, linear_model, mlp_model


def _config(**kw):
    base = dict(dataset="blobs", model="custom", strategies=("random", "isal"), initial=10, budget=8, rounds=3,
                seeds=1, device="cpu", train=TRAIN_PRESETS["fast"],
                strategy_settings={"isal": dict(scope="weights", lissa_depth=15, lissa_repeats=2, scale=100.0)})
    base.update(kw)
    return ExperimentConfig(**base)


def _run(out, config=None, factory=mlp_model, splits=None):
    return run_experiment(config or _config(), out, splits=splits or blob_splits(), model_factory=factory)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "out"
    _run(out)
    return out


def _copy(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def _state(out, strategy="random", seed=0):
    return out / "runs" / strategy / f"seed{seed}" / "state.json"


def _resume(out):
    return Experiment.prepare(_config(), out, splits=blob_splits(), model_factory=mlp_model).run()


# ---- provenance --------------------------------------------------------------------------------------------------

def test_config_records_what_an_api_run_ran_on(finished):
    saved = json.loads((finished / "config.json").read_text())
    assert saved["dataset"] == "api:blobs" and saved["model"] == "api:Sequential"  # not the defaults mnist5k / cnn
    data, model = saved["provenance"]["data"], saved["provenance"]["model"]
    assert (data["name"], data["pool"], data["val"], data["test"], data["num_classes"]) == ("blobs", 120, 40, 60, 3)
    assert set(data["fingerprint"]) == {"pool", "val", "test"}
    assert model["class"] == "torch.nn.modules.container.Sequential" and model["parameters"] == 36 * 8 + 8 + 8 * 3 + 3


def test_another_model_or_other_data_in_the_same_folder_is_refused_naming_the_field(finished, tmp_path):
    out = _copy(finished, tmp_path)
    with pytest.raises(StateError, match="provenance.model"):
        Experiment.prepare(_config(), out, splits=blob_splits(), model_factory=lambda: linear_model())
    with pytest.raises(StateError, match="provenance.data.fingerprint"):
        Experiment.prepare(_config(), out, splits=blob_splits(seed=5), model_factory=mlp_model)
    with pytest.raises(StateError, match="train.lr is 0.05 there and 0.1 here"):
        Experiment.prepare(_config(train=TRAIN_PRESETS["fast"].replace(lr=0.1)), out, splits=blob_splits(),
                           model_factory=mlp_model)
    with pytest.raises(StateError, match="strategy_settings.isal.lissa_depth"):
        Experiment.prepare(_config(strategy_settings={"isal": dict(scope="weights", lissa_depth=16, lissa_repeats=2,
                                                                   scale=100.0)}), out, splits=blob_splits(),
                           model_factory=mlp_model)


def test_check_influence_refuses_a_run_on_api_data(finished, capsys):
    assert main(["check-influence", str(finished)]) == 2
    assert "came through the Python API" in capsys.readouterr().err


def test_a_folder_is_extended_with_more_strategies_and_seeds(finished, tmp_path):
    out = _copy(finished, tmp_path)
    before = {p: p.read_bytes() for p in out.glob("runs/*/seed0/state.json")}
    experiment = Experiment.prepare(_config(strategies=("random", "coreset"), seeds=2, strategy_settings={}), out,
                                    splits=blob_splits(),
                                    model_factory=mlp_model)
    assert experiment.config.strategies == ("random", "isal", "coreset") and experiment.config.seeds == 2
    assert "strategies + coreset" in experiment.notes[-1] and "seeds 1 -> 2" in experiment.notes[-1]
    states = experiment.run()
    assert len(states) == 6
    assert all(p.read_bytes() == data for p, data in before.items())  # finished runs are not recomputed
    saved = json.loads((out / "config.json").read_text())
    assert saved["strategies"] == ["random", "isal", "coreset"] and saved["seeds"] == 2


# ---- state files -------------------------------------------------------------------------------------------------

def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("tamper, message", [
    (lambda d: d["rounds"][0]["metrics"].update(accuracy=0.99), "checksum does not match"),
    (lambda d: d.update(labeled_ids=d["labeled_ids"][:-1] + d["labeled_ids"][-2:-1]), "checksum"),
    (lambda d: d.update(seed=1), "checksum"),
])
def test_an_edited_state_is_detected(finished, tmp_path, tamper, message):
    out = _copy(finished, tmp_path)
    _edit(_state(out), tamper)
    with pytest.raises(StateError, match=message):
        _resume(out)


def _resign(data):
    from influal.loop.state import _checksum

    data["checksum"] = _checksum(data)


@pytest.mark.parametrize("tamper, message", [
    (lambda d: (d["labeled_ids"].__setitem__(12, d["labeled_ids"][11]), _resign(d)), "do not partition"),
    (lambda d: (d.update(labeled_ids=[d["unlabeled_ids"][0]] + d["labeled_ids"][1:],
                         unlabeled_ids=sorted([d["labeled_ids"][0]] + d["unlabeled_ids"][1:])), _resign(d)),
     "initial set"),
    (lambda d: (d["rounds"].append(dict(d["rounds"][-1], round=3)), _resign(d)), "records 4 rounds"),
    (lambda d: (d.update(experiment="somewhere-else"), _resign(d)), "belongs to another experiment"),
    (lambda d: (d["rounds"][1].update(selected=d["rounds"][1]["selected"][:-1]), _resign(d)), "selected 7 items"),
])
def test_a_state_that_does_not_replay_or_belong_is_refused_naming_the_file(finished, tmp_path, tamper, message):
    out = _copy(finished, tmp_path)
    _edit(_state(out), tamper)
    with pytest.raises(StateError, match=message) as err:
        _resume(out)
    assert str(_state(out)) in str(err.value)
    with pytest.raises(StateError, match=message):
        collect_rows(out)  # the report reads only states it has checked


def test_another_seeds_state_copied_in_is_refused(finished, tmp_path):
    out = _copy(finished, tmp_path)
    shutil.copy(_state(out, "isal"), _state(out, "random"))
    with pytest.raises(StateError, match="belongs to strategy 'isal' seed 0, not to 'random' seed 0"):
        _resume(out)


@pytest.mark.parametrize("content", ["null", "[]", '{"version": 2', "\xff\xfe"])
def test_unreadable_states_and_configs_give_one_clear_error(finished, tmp_path, content):
    out = _copy(finished, tmp_path)
    _state(out).write_bytes(content.encode("latin-1"))
    with pytest.raises(StateError, match="state"):
        _resume(out)
    out2 = _copy(finished, tmp_path / "b")
    (out2 / "config.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(StateError, match="config.json"):
        _resume(out2)


def test_a_state_path_that_is_a_folder_is_refused(finished, tmp_path):
    out = _copy(finished, tmp_path)
    _state(out).unlink()
    _state(out).mkdir()
    with pytest.raises(StateError, match="is not a file"):
        _resume(out)


def test_stray_state_files_are_ignored_by_the_report(finished, tmp_path):
    out = _copy(finished, tmp_path)
    stray = out / "runs" / "entropy" / "seed0" / "state.json"
    stray.parent.mkdir(parents=True)
    stray.write_text('{"trunc')
    (out / "runs" / "random" / "seed7").mkdir()
    (out / "runs" / "random" / "seed7" / "state.json").write_text("null")
    rows = collect_rows(out)
    assert {r["strategy"] for r in rows} == {"random", "isal"} and {r["seed"] for r in rows} == {0}
    assert main(["report", str(out)]) == 0


def test_version_1_states_are_replayed_and_resumed(finished, tmp_path):
    out = _copy(finished, tmp_path)
    for path in out.glob("runs/*/seed0/state.json"):
        _edit(path, lambda d: [d.pop(k) for k in ("checksum", "experiment")] and d.update(version=1))
    saved = json.loads((out / "config.json").read_text())
    saved.pop("provenance")
    (out / "config.json").write_text(json.dumps(saved))
    states = _resume(out)
    assert all(len(s.rounds) == 3 for s in states.values())


def test_api_checks_ids_before_selecting(finished):
    from influal.api import SelectionContext
    from influal.tasks.classification import ClassificationTask

    splits = blob_splits()
    with pytest.raises(ConfigError, match="both labeled and unlabeled"):
        SelectionContext(model=mlp_model(), task=ClassificationTask(3), pool=splits.pool,
                         labeled_ids=np.arange(5), unlabeled_ids=np.arange(4, 10))
    with pytest.raises(ConfigError, match="outside the pool"):
        SelectionContext(model=mlp_model(), task=ClassificationTask(3), pool=splits.pool,
                         labeled_ids=np.arange(5), unlabeled_ids=np.array([119, 120]))
    assert torch.is_tensor(splits.pool.images)
