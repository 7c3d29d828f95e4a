"""``influal check-influence``: rebuild a trained model (from a saved run, or the demo setting) and compare
every inverse-HVP solver with the exact solve on its last-layer scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core.errors import ConfigError, StateError
from ..core.io import read_json
from ..influence.check import DEFAULT_SOLVERS, check_solvers
from ..influence.params import ParamScope
from ..loop.config import ExperimentConfig
from ..loop.experiment import Experiment, initial_labeled, state_path
from ..strategies import make_strategy


def _demo_experiment() -> Experiment:
    config = ExperimentConfig(dataset="mnist5k", model="cnn", strategies=("random",), initial=300, budget=100,
                              rounds=2, seeds=1, device="cpu")
    return Experiment.prepare(config, None)


def require_last_scope(experiment: Experiment) -> None:
    """check-influence needs the task's final-layer scope ('last'); refuse before training anything."""
    with torch.random.fork_rng(devices=[]):
        probe = experiment.model_factory()
    try:
        ParamScope(probe, "last", experiment.task.influence_hooks())
    except ConfigError:
        raise ConfigError(f"check-influence compares solvers on a task's final-layer scope ('last'); the "
                          f"{experiment.config.task} task of this run defines none") from None


def rebuild_model(results: str | None, strategy: str, seed: int, round_index: int | None):
    """The model a run trained at (strategy, seed, round), retrained deterministically from its state."""
    if results is None:
        experiment = _demo_experiment()
        require_last_scope(experiment)
        labeled = initial_labeled(len(experiment.splits.pool), experiment.config.initial, seed)
        info = {"source": "demo (mnist5k, cnn, 300 random labels)", "seed": seed, "round": 0}
        model = experiment.train_model(make_strategy("random"), seed, 0, labeled)
        recorded = None
    else:
        out = Path(results)
        if not (out / "config.json").exists():
            raise StateError(f"{out} holds no config.json; pass a folder written by influal run")
        try:
            config = ExperimentConfig.from_dict(read_json(out / "config.json"))
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise StateError(f"{out / 'config.json'} is not a readable influal config ({exc})") from None
        for kind, name in (("data", config.dataset), ("model", config.model)):
            if name.startswith("api:"):
                raise ConfigError(f"this run's {kind} ({name}) came through the Python API; check-influence rebuilds "
                                  "runs on registered data sets and models only (call "
                                  "influal.influence.check.check_solvers on your own model instead)")
        experiment = Experiment.prepare(config, out)
        require_last_scope(experiment)
        state = experiment.saved_state(strategy, seed) if strategy in config.strategies else None
        if state is None:
            raise StateError(f"no state for strategy {strategy!r} seed {seed} under {out}; pick --strategy and "
                             f"--seed among the run's: strategies {', '.join(config.strategies)}, seeds "
                             f"{', '.join(map(str, config.seed_list))}")
        if not state.rounds:
            raise StateError(f"{state_path(out, strategy, seed)} has no finished round yet")
        r = len(state.rounds) - 1 if round_index is None else round_index
        if not 0 <= r < len(state.rounds):
            raise ConfigError(f"--round must lie in 0..{len(state.rounds) - 1} for this run, got {r}")
        labeled = np.asarray(state.labeled_ids[:state.rounds[r].labeled], dtype=np.int64)
        model = experiment.train_model(experiment.strategies.get(strategy, make_strategy(strategy)), seed, r,
                                       labeled)
        recorded = state.rounds[r].metrics.get(experiment.task.metric_name)
        info = {"source": str(out), "strategy": strategy, "seed": seed, "round": r}
    metric = experiment.task.evaluate(model, experiment.splits.test)[experiment.task.metric_name]
    info["metric"] = metric
    if recorded is not None:
        info["reproduced"] = bool(abs(metric - recorded) < 1e-9)
    labeled_set = set(int(i) for i in labeled)
    unlabeled = np.asarray([i for i in range(len(experiment.splits.pool)) if i not in labeled_set], dtype=np.int64)
    return experiment, model, np.asarray(labeled, dtype=np.int64), unlabeled, info


def run_check(results: str | None, strategy: str = "isal", seed: int = 0, round_index: int | None = None,
              budget: int | None = None, damping: float = 0.01, solvers: Sequence[str] | None = None
              ) -> dict[str, Any]:
    chosen = DEFAULT_SOLVERS
    if solvers:
        unknown = sorted(set(solvers) - set(DEFAULT_SOLVERS))
        if unknown:
            raise ConfigError(f"unknown solver(s) {', '.join(unknown)} for --solvers; choose from "
                              f"{', '.join(DEFAULT_SOLVERS)}")
        chosen = {name: DEFAULT_SOLVERS[name] for name in solvers}
    experiment, model, labeled, unlabeled, info = rebuild_model(results, strategy, seed, round_index)
    budget = budget or experiment.config.budget
    header, rows = check_solvers(model, experiment.task, experiment.splits.pool, labeled, unlabeled,
                                 experiment.splits.val, np.arange(len(experiment.splits.val)), budget=budget,
                                 solvers=chosen, damping=damping, seed=seed)
    return {"model": info, "setting": header, "solvers": [r.to_dict() for r in rows],
            "lines": [r.line(budget) for r in rows]}
