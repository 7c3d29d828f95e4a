"""The task-blind active-learning loop: train from scratch, evaluate, select, label; state saved every round.

Results layout under ``out``::

    config.json                        the resolved experiment config (version 2) and its provenance (the data's
                                       and the model's identity)
    runs/<strategy>/seed<k>/state.json labeled/unlabeled ids and one record per finished round (checksummed)
    .influal.lock                      while a run holds the folder (the owner's pid)

(``metrics.csv``, ``report.md`` and ``curves.png`` are written by the report layer through the ``on_round``
callback; see :func:`influal.app.run.run_experiment`.)

A run that is killed and started again with the same command resumes from the last complete round and
ends with exactly the selections and metrics of an uninterrupted run: every random choice of a round
comes from generators seeded by (seed, round, strategy), never from process history. A folder that holds the
same experiment with fewer strategies or seeds is extended; one that holds another experiment (another data
set, model, recipe or setting) is refused, naming the field that differs.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..api import DatasetSplits, Selection, SelectionContext, Strategy, Task, TaskPlugin, check_selection
from ..core import dist
from ..core.errors import ConfigError, DataError, DataWarning, StateError
from ..core.faults import fault_point
from ..core.io import atomic_write_json, clean_temporary, is_temporary, read_json
from ..core.lock import LOCK_NAME, FolderLock, lock_owner
from ..core.seeding import derive_seed
from ..core.torch_utils import resolve_device
from ..tasks import get_task
from .config import EXTENSIBLE, IGNORED, RUN_ONLY, ExperimentConfig
from .provenance import data_identity, differences, model_identity, show
from .state import ActiveState, RoundRecord, initial_labeled, load_state

ModelFactory = Callable[[], nn.Module]
Log = Callable[[str], None]


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
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def prepare(cls, config: ExperimentConfig, out: str | Path | None, *, splits: DatasetSplits | None = None,
                model_factory: ModelFactory | None = None) -> "Experiment":
        """Check everything that can be checked before anything is written; raise InflualError if not runnable.

        ``out=None`` prepares an experiment that only trains models on demand (``train_model``) and writes nothing.
        """
        plugin = get_task(config.task)
        if out is not None:
            out = Path(out)
            check_output_path(out)
        strategies = {name: config.build_strategy(name) for name in config.strategies}
        if plugin.task_class is not None:  # capabilities first: before data is loaded or generated
            for strategy in strategies.values():
                strategy.check_task(plugin.task_class)
        if splits is None or model_factory is None:
            plugin.check(config)
        device = resolve_device(config.device)
        given_splits = splits is not None
        if splits is None:
            splits = plugin.load_data(config)
        pool_size = len(splits.pool)
        if config.initial > pool_size:
            raise ConfigError(f"initial size {config.initial} exceeds the pool of {pool_size} items; lower --initial")
        if config.final_labeled > pool_size:
            raise ConfigError(f"initial {config.initial} + budget {config.budget} x {config.rounds - 1} rounds = "
                              f"{config.final_labeled} labels exceeds the pool of {pool_size} items; lower "
                              "--budget or --rounds")
        for part in ("pool", "val", "test"):
            if len(getattr(splits, part)) == 0:
                raise DataError(f"the {part} split of {splits.name} is empty; ISAL's reference set is the val split "
                                "and the metric is measured on the test split")
        given_model = model_factory is not None
        if model_factory is None:
            model_factory = plugin.model_factory(config, splits)
        task = plugin.build_task(config, splits, device)
        with torch.random.fork_rng(devices=[]):  # a trial model: the loop seeds every real one itself
            probe = model_factory().to(device)
        for part in (splits.pool, splits.val, splits.test):
            task.check_inputs(probe, part, np.arange(min(2, len(part))))
        for strategy in strategies.values():
            strategy.check(task, probe)
        for warning in plugin.check_splits(splits):
            warnings.warn(warning, DataWarning, stacklevel=2)
        renamed = {}  # data and models given through the API are named for what they are, not the defaults
        if given_splits and not config.dataset.startswith("api:"):
            renamed["dataset"] = f"api:{splits.name}"
        if given_model and not config.model.startswith("api:"):
            renamed["model"] = f"api:{type(probe).__name__}"
        if renamed:
            config = config.replace(**renamed)
        provenance = {"data": data_identity(splits), "model": model_identity(probe)}
        notes = []
        if out is not None:
            config, notes = resolve_results_folder(out, config, provenance)
            for name in config.strategies:  # an extended folder brings the strategies it already ran
                if name not in strategies:
                    strategies[name] = config.build_strategy(name)
                    strategies[name].check(task, probe)
        if dist.active():
            if not dist.all_agree(config.to_dict()):
                raise ConfigError("the ranks of this torch.distributed job read different settings; give every rank "
                                  "the same command line")
            lonely = [name for name, s in strategies.items() if not s.shards]
            if lonely:
                notes.append(f"{', '.join(lonely)} do(es) not split selection work between ranks: each of the "
                             f"{dist.world_size()} ranks computes the whole selection (the same one)")
            dist.barrier()  # every rank has read the results folder before rank 0 takes its lock
        return cls(config, plugin, splits, task, model_factory, out, device, strategies, provenance, notes)

    def run(self, *, progress: bool = False, log: Log | None = None,
            on_round: Callable[["Experiment"], None] | None = None) -> dict[tuple[str, int], ActiveState]:
        """Run (or resume) every strategy with every seed; ``on_round(self)`` after each finished round."""
        log = log if log is not None and dist.is_main() else (lambda _msg: None)
        if self.out is None:
            raise StateError("this experiment was prepared without a results folder; pass out= to run it")
        main = dist.is_main()  # under torch.distributed rank 0 alone writes; every rank computes every round
        with FolderLock(self.out, log) if main else contextlib.nullcontext():
            if main:
                removed = clean_temporary([self.out])
                if removed:
                    log(f"removed {len(removed)} temporary file(s) an interrupted write left in {self.out}")
                atomic_write_json(self.out / "config.json", {**self.config.to_dict(), "provenance": self.provenance})
            for note in self.notes:
                log(note)
            log(self.splits.describe() + (f"; {dist.world_size()} processes" if dist.active() else ""))
            states = {}
            for seed in self.config.seed_list:
                for strategy in self.config.strategies:
                    states[(strategy, seed)] = self.run_one(strategy, seed, progress=progress and main, log=log,
                                                            on_round=on_round if main else None)
            dist.barrier()
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
        state = self.saved_state(strategy_name, seed)
        if state is None:
            state = ActiveState.start(strategy_name, seed, initial_labeled(len(self.splits.pool), cfg.initial, seed),
                                      len(self.splits.pool), cfg.experiment_id(strategy_name))
        strategy = self.strategies[strategy_name]
        while state.next_round < cfg.rounds and not (state.rounds and self.reached_target(state.rounds[-1].metrics)):
            record = self.run_round(strategy, state, progress=progress)
            state.add_round(record)
            t0 = time.perf_counter()
            if dist.is_main():
                state.save(path)
            fault_point("after a round")
            if on_round is not None:
                on_round(self)
            overhead = time.perf_counter() - t0
            metric = record.metrics.get(self.task.metric_name, float("nan"))
            log(f"{strategy_name:>10} seed {seed} round {record.round}: {record.labeled} labeled, "
                f"{self.task.metric_name} {metric:.4f} (train {record.timings['train_s']:.1f}s, "
                f"select {record.timings.get('select_s', 0.0):.1f}s, state and report {overhead:.2f}s)")
        return state

    def saved_state(self, strategy: str, seed: int) -> ActiveState | None:
        """The checked state of (strategy, seed) in the results folder, or None if it has none yet."""
        path = state_path(self.out, strategy, seed)
        if not path.exists():
            return None
        cfg = self.config
        return load_state(path, strategy=strategy, seed=seed, experiment=cfg.experiment_id(strategy),
                          pool_size=len(self.splits.pool), initial=cfg.initial, budget=cfg.budget, rounds=cfg.rounds)

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
                           timings={k: round(v, 4) for k, v in timings.items()}, world_size=dist.world_size())


def check_output_path(out: Path) -> None:
    """``--out`` must be a folder we can create and write: not a file, not under a file, not in /proc or /sys."""
    resolved = out.resolve()
    if any(str(resolved).startswith(p) for p in ("/proc/", "/sys/", "/dev/")) or str(resolved) in ("/proc", "/sys",
                                                                                                    "/dev"):
        raise StateError(f"--out {out} is inside a system folder; choose a folder of your own")
    if out.exists() and not out.is_dir():
        raise StateError(f"--out {out} is a file, not a folder; choose another --out")
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StateError(f"--out {out} lies under {parent}, which is a file; choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise StateError(f"--out {out} cannot be created: {parent} is not writable")
            break
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise StateError(f"--out {out} is not writable; choose another --out")


def _strip(config_dict: dict) -> dict:
    return {k: v for k, v in comparable(config_dict).items() if k not in EXTENSIBLE + IGNORED}


def resolve_results_folder(out: Path, config: ExperimentConfig, provenance: dict
                           ) -> tuple[ExperimentConfig, list[str]]:
    """The config to run in ``out``: ``config`` itself for a new or empty folder (stray temporary files and a stale
    lock do not count), the saved experiment extended by ``config``'s new strategies and seeds, or a StateError
    that names the first field in which the saved experiment differs."""
    owner = lock_owner(out) if out.is_dir() else None
    if owner is not None:
        raise StateError(f"{out} is in use by another influal run (pid {owner[0]}); wait for it to finish or stop it")
    saved_path = out / "config.json"
    if not saved_path.exists():
        stray = [p for p in out.iterdir() if not is_temporary(p) and p.name != LOCK_NAME] if out.is_dir() else []
        if stray:
            raise StateError(f"{out} is not empty and holds no influal config.json; choose another --out folder")
        return config, []
    try:
        saved = read_json(saved_path)
    except (OSError, UnicodeDecodeError, ValueError):
        raise StateError(f"{saved_path} is not valid JSON; restore it or choose another --out folder") from None
    if not isinstance(saved, dict):
        raise StateError(f"{saved_path} is not an influal config (a JSON {type(saved).__name__}); restore it or "
                         "choose another --out folder")
    try:
        previous = ExperimentConfig.from_dict(saved)
    except ConfigError as exc:
        raise StateError(f"{saved_path} cannot be read as an experiment ({exc}); choose another --out folder") from None
    here, there = config.to_dict(), previous.to_dict()
    fields = differences(_strip(there), _strip(here))
    if not fields and previous.first_seed != config.first_seed:
        fields = ["first_seed"]
    for name in [s for s in previous.strategies if s in config.strategies]:
        own = [{k: v for k, v in d["strategy_settings"][name].items() if k not in RUN_ONLY} for d in (there, here)]
        fields += differences(*own, prefix=f"strategy_settings.{name}")
    if fields:
        field_name = fields[0]
        raise StateError(f"{out} holds a different experiment: {field_name} is {show(_lookup(there, field_name))} "
                         f"there and {show(_lookup(here, field_name))} here; choose another --out folder or delete "
                         "that one" + (f" ({len(fields) - 1} more field(s) differ)" if len(fields) > 1 else ""))
    recorded = saved.get("provenance")
    if isinstance(recorded, dict):
        changed = differences(recorded, provenance, prefix="provenance")
        if changed:
            raise StateError(f"{out} was computed on other data or another model: {changed[0]} is "
                             f"{show(_lookup({'provenance': recorded}, changed[0]))} there and "
                             f"{show(_lookup({'provenance': provenance}, changed[0]))} here; choose another --out")
    strategies = list(previous.strategies) + [s for s in config.strategies if s not in previous.strategies]
    seeds = max(previous.seeds, config.seeds)
    settings = {**previous.strategy_settings, **config.strategy_settings}
    notes = []
    added = [s for s in strategies if s not in previous.strategies]
    if added or seeds != previous.seeds:
        notes.append(f"extending {out}: " + ", ".join(
            ([f"strategies + {', '.join(added)}"] if added else []) +
            ([f"seeds {previous.seeds} -> {seeds}"] if seeds != previous.seeds else [])))
    merged = config.replace(strategies=tuple(strategies), seeds=seeds, strategy_settings=settings)
    return merged, notes


def _lookup(data: dict, dotted: str):
    value = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return "(absent)"
        value = value[key]
    return value


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
        out["strategy_settings"] = {name: ({k: v for k, v in s.items() if k not in RUN_ONLY}
                                           if isinstance(s, dict) else s) for name, s in settings.items()}
    return out
