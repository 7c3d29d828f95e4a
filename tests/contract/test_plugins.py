"""A task and a strategy from outside the package (tests/plugin_example/influal_toy), without editing influal:
registered with ``register_*`` calls for the Python API, and found as an installed plug-in (entry points in a
dist-info folder on the path) by ``influal run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from influal import STRATEGIES, TASKS, ExperimentConfig, run_experiment

EXAMPLE = Path(__file__).resolve().parents[1] / "plugin_example"


@pytest.fixture
def toy():
    sys.path.insert(0, str(EXAMPLE))
    import influal_toy

    influal_toy.register()
    yield influal_toy
    TASKS.unregister("tabular")
    STRATEGIES.unregister("lowest_id")
    sys.path.remove(str(EXAMPLE))


def test_an_outside_task_and_strategy_run_through_the_python_api(toy, tmp_path):
    config = ExperimentConfig(task="tabular", strategies=("lowest_id", "isal", "coreset", "random"), initial=10,
                              budget=5, rounds=3, seeds=1, device="cpu",
                              strategy_settings={"lowest_id": {"offset": 2}, "isal": {"lissa_depth": 20}})
    states = run_experiment(config, tmp_path / "out")
    lowest = states[("lowest_id", 0)]
    initial = set(lowest.labeled_ids[:10])
    expected = sorted(i for i in range(100) if i not in initial)[2:7]
    assert lowest.rounds[0].selected == expected  # the plug-in strategy's known answer, with its own setting
    isal = states[("isal", 0)].rounds[0].selection
    assert isal["scope"] == "weights" and isal["solver"] == "lissa"  # no hooks: the engine's generic defaults
    assert isal["gs_method"] == "layerwise"
    for state in states.values():
        assert [r.labeled for r in state.rounds] == [10, 15, 20] and "accuracy" in state.rounds[-1].metrics
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["task"] == "tabular" and saved["task_settings"] == {"noise": 0.8}
    assert "| lowest_id |" in (tmp_path / "out" / "report.md").read_text()


def _install_entry_points(site: Path) -> None:
    """What `pip install` of a plug-in leaves: a dist-info folder whose entry_points.txt names its objects."""
    dist = site / "influal_toy-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: influal-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[influal.tasks]\ntabular = influal_toy:PLUGIN\n\n"
                                           "[influal.strategies]\nlowest_id = influal_toy:LowestId\n")


def test_an_installed_plugin_is_found_by_influal_run(tmp_path):
    site = tmp_path / "site"
    _install_entry_points(site)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "influal", "run", "--task", "tabular", "--strategies", "lowest_id,random",
           "--strategy-option", "lowest_id.offset=1", "--tabular-noise", "0.5", "--initial", "8", "--budget", "4",
           "--rounds", "2", "--seeds", "1", "--device", "cpu", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| lowest_id |" in done.stdout
    state = json.loads((out / "runs" / "lowest_id" / "seed0" / "state.json").read_text())
    labeled = set(state["labeled_ids"][:8])
    assert state["rounds"][0]["selected"] == sorted(i for i in range(100) if i not in labeled)[1:5]
    assert json.loads((out / "config.json").read_text())["task_settings"] == {"noise": 0.5}
    # a flag of another task is refused, in one line, before anything is written
    bad = subprocess.run(cmd[:-3] + ["--backbone", "tiny", "--out", str(tmp_path / "bad"), "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "influal: error: --backbone only apply to --task detection"
    assert not (tmp_path / "bad").exists()
    assert np.asarray(state["labeled_ids"]).size == 12
