"""The task-blind active-learning loop: train from scratch, evaluate, select, label; state saved every round.

Results layout under ``out``::

    config.json                        the resolved experiment config (version 2)
    runs/<strategy>/seed<k>/state.json labeled/unlabeled ids and one record per finished round

(``metrics.csv``, ``report.md`` and ``curves.png`` are written by the report layer through the ``on_round``
callback; see :func:`influal.app.run.run_experiment`.)

A run that is killed and started again with the same command resumes from the last complete round and
ends with exactly the selections and metrics of an uninterrupted run: every random choice of a round
comes from generators seeded by (seed, round, strategy), never from process history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..api import DatasetSplits, Selection, SelectionContext, Strategy, Task, TaskPlugin, check_selection
from ..core.errors import ConfigError, StateError
from ..core.io import atomic_write_json, read_json
from ..core.seeding import derive_seed
from ..core.torch_utils import resolve_device
from ..tasks import get_task
from .config import ExperimentConfig
from .state import ActiveState, RoundRecord

ModelFactory = Callable[[], nn.Module]
Log = Callable[[str], None]


def initial_labeled(pool_size: int, size: int, seed: int) -> np.ndarray:
    """The seed's random initial labeled set, shared by every strategy of that seed."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "initial"))
    return np.sort(torch.randperm(pool_size, generator=gen)[:size].numpy())


def state_path(out: Path, strategy: str, seed: int) -> Path:
    return out / "runs" / strategy / f"seed{seed}" / "state.json"


@dataclass
class Experiment:
    """A validated experiment, ready to run: config, task plug-in, data, task, model factory, strategies."""

    config: ExperimentConfig
    plugin: TaskPlugin
    splits: DatasetSplits
    task: Task
    model_factory: ModelFactory
    out: Path | None
    device: torch.device
    strategies: dict[str, Strategy] = field(default_factory=dict)

    @classmethod
    def prepare(cls, config: ExperimentConfig, out: str | Path | None, *, splits: DatasetSplits | None = None,
                model_factory: ModelFactory | None = None) -> "Experiment":
        """Check everything that can be checked before anything is written; raise InflualError if not runnable.

        ``out=None`` prepares an experiment that only trains models on demand (``train_model``) and writes nothing.
        """
        plugin = get_task(config.task)
        strategies = {name: config.build_strategy(name) for name in config.strategies}
        if splits is None or model_factory is None:
            plugin.check(config)
        device = resolve_device(config.device)
        if splits is None:
            splits = plugin.load_data(config)
        pool_size = len(splits.pool)
        if config.initial > pool_size:
            raise ConfigError(f"initial size {config.initial} exceeds the pool of {pool_size} items; lower --initial")
        if config.final_labeled > pool_size:
            raise ConfigError(f"initial {config.initial} + budget {config.budget} x {config.rounds - 1} rounds = "
                              f"{config.final_labeled} labels exceeds the pool of {pool_size} items; lower "
                              "--budget or --rounds")
        if model_factory is None:
            model_factory = plugin.model_factory(config, splits)
        task = plugin.build_task(config, splits, device)
        with torch.random.fork_rng(devices=[]):  # a trial model: the loop seeds every real one itself
            probe = model_factory().to(device)
        for part in (splits.pool, splits.val, splits.test):
            task.check_inputs(probe, part, np.arange(min(2, len(part))))
        for strategy in strategies.values():
            strategy.check(task, probe)
        if out is not None:
            out = Path(out)
            check_results_folder(out, config)
        return cls(config, plugin, splits, task, model_factory, out, device, strategies)

    def run(self, *, progress: bool = False, log: Log | None = None,
            on_round: Callable[["Experiment"], None] | None = None) -> dict[tuple[str, int], ActiveState]:
        """Run (or resume) every strategy with every seed; ``on_round(self)`` after each finished round."""
        log = log or (lambda _msg: None)
        if self.out is None:
            raise StateError("this experiment was prepared without a results folder; pass out= to run it")
        atomic_write_json(self.out / "config.json", self.config.to_dict())
        log(self.splits.describe())
        states = {}
        for seed in self.config.seed_list:
            for strategy in self.config.strategies:
                states[(strategy, seed)] = self.run_one(strategy, seed, progress=progress, log=log, on_round=on_round)
        return states

    def reached_target(self, metrics: dict) -> bool:
        """Whether a round's metrics reach ``stop_at``, which ends that run early."""
        target = self.config.stop_at
        return target is not None and metrics.get(self.task.metric_name, float("-inf")) >= target

    def run_one(self, strategy_name: str, seed: int, *, progress: bool = False, log: Log | None = None,
                on_round: Callable[["Experiment"], None] | None = None) -> ActiveState:
        """Run (or resume) one strategy with one seed to the last round."""
        log = log or (lambda _msg: None)
        cfg = self.config
        path = state_path(self.out, strategy_name, seed)
        if path.exists():
            state = ActiveState.load(path)
        else:
            state = ActiveState.start(strategy_name, seed, initial_labeled(len(self.splits.pool), cfg.initial, seed),
                                      len(self.splits.pool))
        strategy = self.strategies[strategy_name]
        while state.next_round < cfg.rounds and not (state.rounds and self.reached_target(state.rounds[-1].metrics)):
            record = self.run_round(strategy, state, progress=progress)
            state.add_round(record)
            state.save(path)
            if on_round is not None:
                on_round(self)
            metric = record.metrics.get(self.task.metric_name, float("nan"))
            log(f"{strategy_name:>10} seed {seed} round {record.round}: {record.labeled} labeled, "
                f"{self.task.metric_name} {metric:.4f} (train {record.timings['train_s']:.1f}s, "
                f"select {record.timings.get('select_s', 0.0):.1f}s)")
        return state

    def train_model(self, strategy: Strategy, seed: int, round_index: int, labeled, *,
                    progress: bool = False) -> nn.Module:
        """The model of (seed, round): a fresh init and training shuffles seeded by (seed, "train", round).

        Deterministic, so a saved run's model of any round can be rebuilt exactly from its state.
        """
        train_seed = derive_seed(seed, "train", round_index)
        torch.manual_seed(train_seed)
        model = self.model_factory().to(self.device)
        # A strategy that changes training (learning loss) returns the module to train and a loss_fn for
        # task.train; it keeps what it needs for its select(). Others train the plain model.
        prepared = strategy.prepare_training(model, self.task, self.splits.pool, labeled, self.config.train)
        trained, extra = model, {}
        if prepared is not None:
            trained, extra["loss_fn"] = prepared
        self.task.train(trained, self.splits.pool, labeled, self.config.train,
                        torch.Generator().manual_seed(train_seed), progress=progress, **extra)
        return model

    def context(self, model: nn.Module, state: ActiveState, round_index: int, progress: bool = False
                ) -> SelectionContext:
        """The selection context of (state's strategy and seed, round)."""
        gen = torch.Generator().manual_seed(derive_seed(state.seed, "select", state.strategy, round_index))
        return SelectionContext(model=model, task=self.task, pool=self.splits.pool, labeled_ids=state.labeled_array(),
                                unlabeled_ids=state.unlabeled_array(), reference=self.splits.val, generator=gen,
                                progress=progress)

    def run_round(self, strategy: Strategy, state: ActiveState, *, progress: bool = False) -> RoundRecord:
        cfg = self.config
        r = state.next_round
        labeled = state.labeled_array()
        timings = {}
        t0 = time.perf_counter()
        model = self.train_model(strategy, state.seed, r, labeled, progress=progress)
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = self.task.evaluate(model, self.splits.test)
        timings["eval_s"] = time.perf_counter() - t0
        selected, summary = [], {}
        if r < cfg.rounds - 1 and not self.reached_target(metrics):
            ctx = self.context(model, state, r, progress)
            t0 = time.perf_counter()
            selection: Selection = strategy.select(ctx, cfg.budget)
            timings["select_s"] = time.perf_counter() - t0
            check_selection(selection, ctx, cfg.budget, state.strategy)
            selected = [int(i) for i in selection.ids]
            summary = selection.summary()
        return RoundRecord(round=r, labeled=len(labeled), cost=self.task.cost(self.splits.pool, labeled),
                           metrics=metrics, selected=selected, selection=summary,
                           timings={k: round(v, 4) for k, v in timings.items()})


def check_results_folder(out: Path, config: ExperimentConfig) -> None:
    """A results folder must be new, empty, or hold this same experiment (which is then resumed)."""
    saved = out / "config.json"
    if saved.exists():
        try:
            previous = read_json(saved)
        except ValueError:
            raise StateError(f"{saved} is not valid JSON; choose another --out folder") from None
        if comparable(previous) != comparable(config.to_dict()):
            raise StateError(f"{out} holds a different experiment (its config.json differs); choose another "
                             "--out folder or delete that one")
    elif out.exists() and not out.is_dir():
        raise StateError(f"--out {out} is a file, not a folder; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise StateError(f"{out} is not empty and holds no influal config.json; choose another --out folder")


def comparable(config_dict: dict) -> dict:
    """Config fields that define the experiment: the device and the scoring pass's memory layout do not; a config
    of an earlier version, or missing a setting added later, compares as it is read today."""
    try:
        config_dict = ExperimentConfig.from_dict(config_dict).to_dict()
    except ConfigError:
        pass  # not a config this version can read: compare as written (and so refuse)
    if not isinstance(config_dict, dict):
        return {"unreadable": repr(config_dict)}
    out = {k: v for k, v in config_dict.items() if k != "device"}
    settings = out.get("strategy_settings")
    if isinstance(settings, dict):
        out["strategy_settings"] = {name: ({k: v for k, v in s.items() if k != "memory_format"}
                                           if isinstance(s, dict) else s) for name, s in settings.items()}
    return out
