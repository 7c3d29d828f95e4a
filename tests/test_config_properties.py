"""Property-based tests (hypothesis) of the config and CSV readers: whatever they are given, they either read it
back exactly or refuse it with the package's own error, never with another exception."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from influal.core.errors import ConfigError, InflualError, StateError
from influal.loop.config import ExperimentConfig
from influal.report import BASE_COLUMNS, read_metrics_csv, write_metrics_csv

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

valid_config = st.fixed_dictionaries({
    "strategies": st.lists(st.sampled_from(["isal", "random", "coreset", "entropy", "margin", "badge", "bald"]),
                           min_size=1, max_size=4, unique=True),
    "initial": st.integers(1, 5000), "budget": st.integers(1, 5000), "rounds": st.integers(1, 50),
    "seeds": st.integers(1, 20), "first_seed": st.integers(0, 100),
    "val_size": st.none() | st.integers(1, 1000), "test_size": st.none() | st.integers(1, 1000),
    "stop_at": st.none() | st.floats(0.01, 1.0),
    "train": st.fixed_dictionaries({"epochs": st.integers(1, 300), "lr": st.floats(1e-5, 1.0),
                                    "batch_size": st.integers(1, 512)}),
})


@SETTINGS
@given(valid_config)
def test_valid_configs_round_trip_through_json(values):
    cfg = ExperimentConfig.from_dict({**values, "train": {**values["train"], "milestones": []}})
    again = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.to_dict() == cfg.to_dict()


junk = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 15, 10 ** 15), st.floats(allow_nan=True),
                 st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                                          st.integers(), max_size=2))
FIELDS = ["task", "dataset", "model", "strategies", "initial", "budget", "rounds", "seeds", "first_seed", "val_size",
          "test_size", "device", "train", "strategy_settings", "task_settings", "eval_batch_size", "stop_at",
          "version", "no_such_field"]


@SETTINGS
@given(valid_config, st.sampled_from(FIELDS), junk)
def test_a_corrupted_config_is_read_or_refused_with_a_config_error(values, field, value):
    data = {**values, "train": {**values["train"], "milestones": []}, field: value}
    try:
        cfg = ExperimentConfig.from_dict(data)
    except ConfigError:
        return
    # what was accepted is a valid config that round-trips
    assert ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@SETTINGS
@given(junk)
def test_a_config_that_is_not_an_object_is_refused(value):
    if isinstance(value, dict):
        value = {"no_such_field": value}
    with pytest.raises(ConfigError):
        ExperimentConfig.from_dict(value)


rows = st.lists(st.fixed_dictionaries({
    "strategy": st.sampled_from(["isal", "random", "a,b", 'quo"te']), "seed": st.integers(0, 9),
    "round": st.integers(0, 20), "labeled": st.integers(0, 10 ** 6), "cost": st.floats(0, 1e6),
    "accuracy": st.floats(0, 1), "train_s": st.floats(0, 1e4)}), max_size=12)


@SETTINGS
@given(rows)
def test_metrics_csv_round_trips(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("csv") / "metrics.csv"
    write_metrics_csv(values, path)
    back = read_metrics_csv(path)
    assert len(back) == len(values)
    for got, want in zip(back, values):
        assert got["strategy"] == want["strategy"] and got["seed"] == want["seed"] and got["round"] == want["round"]
        for key in ("labeled", "cost", "accuracy", "train_s"):
            assert math.isclose(got[key], float(want[key]), rel_tol=0, abs_tol=0)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_metrics_csv_are_read_or_refused_with_a_state_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("csv") / "metrics.csv"
    path.write_bytes(content)
    try:
        back = read_metrics_csv(path)
    except StateError:
        return
    except InflualError as exc:  # pragma: no cover - would be a wrong error class
        raise AssertionError(exc) from None
    assert isinstance(back, list)
    if back:
        assert set(BASE_COLUMNS) <= set(back[0])
