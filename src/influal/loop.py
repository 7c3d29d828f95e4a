"""The active-learning loop: train from scratch, evaluate, select, label; state saved after every round.

Results layout under ``out``::

    config.json                       the resolved experiment config
    runs/<strategy>/seed<k>/state.json labeled/unlabeled ids and one record per finished round
    metrics.csv, report.md, curves.png regenerated from the states after every round

A run that is killed and started again with the same command resumes from the last complete round and
ends with exactly the selections and metrics of an uninterrupted run: every random choice of a round
comes from generators seeded by (seed, round, strategy), never from process history.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .config import ExperimentConfig
from .data import DatasetSplits, load_dataset
from .errors import ConfigError, StateError
from .io import atomic_write_json, read_json
from .models import build_model
from .report import write_reports
from .state import ActiveState, RoundRecord
from .strategies import SelectionContext, make_strategy
from .tasks import ClassificationTask

ModelFactory = Callable[[], nn.Module]
Log = Callable[[str], None]


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (strings and ints); independent of PYTHONHASHSEED."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but no GPU is available; use --device cpu or auto")
    return device


def initial_labeled(pool_size: int, size: int, seed: int) -> np.ndarray:
    """The seed's random initial labeled set, shared by every strategy of that seed."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "initial"))
    return np.sort(torch.randperm(pool_size, generator=gen)[:size].numpy())


def state_path(out: Path, strategy: str, seed: int) -> Path:
    return out / "runs" / strategy / f"seed{seed}" / "state.json"


@dataclass
class Experiment:
    """A validated experiment, ready to run: config, data, task, model factory, output folder."""

    config: ExperimentConfig
    splits: DatasetSplits
    task: ClassificationTask
    model_factory: ModelFactory
    out: Path | None
    device: torch.device

    @classmethod
    def prepare(cls, config: ExperimentConfig, out: str | Path | None, *, splits: DatasetSplits | None = None,
                model_factory: ModelFactory | None = None) -> "Experiment":
        """Check everything that can be checked before anything is written; raise InflualError if not runnable.

        ``out=None`` prepares an experiment that only trains models on demand (``train_model``) and writes nothing.
        """
        for name in config.strategies:
            make_strategy(name)
        if config.task not in ("classification", "detection"):
            raise ConfigError(f"task {config.task!r} is not supported; use 'classification' or 'detection'")
        device = resolve_device(config.device)
        task = None
        if config.task == "detection":  # detection brings its own data, task and detector factory
            from .detection.runner import prepare_detection

            splits, task, model_factory = prepare_detection(config, device, splits=splits, model_factory=model_factory)
        if model_factory is None:
            build_model(config.model, 10, 1, 28)  # validates the name before loading data
        if splits is None:
            splits = load_dataset(config.dataset, config.data_root, config.val_size, config.test_size)
        pool_size = len(splits.pool)
        if config.initial > pool_size:
            raise ConfigError(f"initial size {config.initial} exceeds the pool of {pool_size} items; lower --initial")
        if config.final_labeled > pool_size:
            raise ConfigError(f"initial {config.initial} + budget {config.budget} x {config.rounds - 1} rounds = "
                              f"{config.final_labeled} labels exceeds the pool of {pool_size} items; lower "
                              "--budget or --rounds")
        if out is not None:
            out = Path(out)
            _check_results_folder(out, config)
        if model_factory is None:
            def model_factory() -> nn.Module:
                return build_model(config.model, splits.num_classes, splits.in_channels, splits.image_size)
        if task is None:
            task = ClassificationTask(splits.num_classes, device, config.eval_batch_size)
        return cls(config, splits, task, model_factory, out, device)

    def run(self, *, progress: bool = False, log: Log | None = None) -> dict[tuple[str, int], ActiveState]:
        log = log or (lambda _msg: None)
        if self.out is None:
            raise StateError("this experiment was prepared without a results folder; pass out= to run it")
        atomic_write_json(self.out / "config.json", self.config.to_dict())
        log(self.splits.describe())
        states = {}
        for seed in self.config.seed_list:
            for strategy in self.config.strategies:
                states[(strategy, seed)] = self.run_one(strategy, seed, progress=progress, log=log)
        write_reports(self.out, self.task.metric_name)
        if self.config.task == "detection":
            from .report import write_box_report

            write_box_report(self.out, self.task.metric_name)
        return states

    def reached_target(self, metrics: dict) -> bool:
        """Whether a round's metrics reach ``detection.target_ap``, which ends that run early."""
        target = self.config.detection.target_ap if self.config.task == "detection" else None
        return target is not None and metrics.get(self.task.metric_name, float("-inf")) >= target

    def run_one(self, strategy_name: str, seed: int, *, progress: bool = False, log: Log | None = None) -> ActiveState:
        """Run (or resume) one strategy with one seed to the last round."""
        log = log or (lambda _msg: None)
        cfg = self.config
        path = state_path(self.out, strategy_name, seed)
        if path.exists():
            state = ActiveState.load(path)
        else:
            state = ActiveState.start(strategy_name, seed, initial_labeled(len(self.splits.pool), cfg.initial, seed),
                                      len(self.splits.pool))
        strategy = make_strategy(strategy_name)
        while state.next_round < cfg.rounds and not (state.rounds and self.reached_target(state.rounds[-1].metrics)):
            record = self.run_round(strategy, state, progress=progress)
            state.add_round(record)
            state.save(path)
            write_reports(self.out, self.task.metric_name, plots=False)
            metric = record.metrics.get(self.task.metric_name, float("nan"))
            log(f"{strategy_name:>10} seed {seed} round {record.round}: {record.labeled} labeled, "
                f"{self.task.metric_name} {metric:.4f} (train {record.timings['train_s']:.1f}s, "
                f"select {record.timings.get('select_s', 0.0):.1f}s)")
        return state

    def train_model(self, strategy, seed: int, round_index: int, labeled, *, progress: bool = False) -> nn.Module:
        """The model of (seed, round): a fresh init and training shuffles seeded by (seed, "train", round).

        Deterministic, so a saved run's model of any round can be rebuilt exactly from its state.
        """
        train_seed = derive_seed(seed, "train", round_index)
        torch.manual_seed(train_seed)
        model = self.model_factory().to(self.device)
        # A strategy that changes training (learning loss) returns the module to train and a loss_fn for
        # task.train; it keeps what it needs for its select(). Others train the plain model as before.
        prepare = getattr(strategy, "prepare_training", None)
        extra = {}
        trained = model
        if prepare is not None:
            trained, extra["loss_fn"] = prepare(model, self.task, self.splits.pool, labeled, self.config.train)
        self.task.train(trained, self.splits.pool, labeled, self.config.train,
                        torch.Generator().manual_seed(train_seed), progress=progress, **extra)
        return model

    def run_round(self, strategy, state: ActiveState, *, progress: bool = False) -> RoundRecord:
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
            ctx = SelectionContext(model=model, task=self.task, pool=self.splits.pool, labeled_ids=labeled,
                                   unlabeled_ids=state.unlabeled_array(), reference=self.splits.val,
                                   generator=torch.Generator().manual_seed(derive_seed(state.seed, "select",
                                                                                       state.strategy, r)),
                                   influence=cfg.influence, progress=progress)
            t0 = time.perf_counter()
            selection = strategy.select(ctx, cfg.budget)
            timings["select_s"] = time.perf_counter() - t0
            selected = [int(i) for i in selection.ids]
            summary = selection.summary()
        return RoundRecord(round=r, labeled=len(labeled), cost=self.task.cost(self.splits.pool, labeled),
                           metrics=metrics, selected=selected, selection=summary,
                           timings={k: round(v, 4) for k, v in timings.items()})


def _check_results_folder(out: Path, config: ExperimentConfig) -> None:
    """A results folder must be new, empty, or hold this same experiment (which is then resumed)."""
    saved = out / "config.json"
    if saved.exists():
        try:
            previous = read_json(saved)
        except ValueError:
            raise StateError(f"{saved} is not valid JSON; choose another --out folder") from None
        if _comparable(previous) != _comparable(config.to_dict()):
            raise StateError(f"{out} holds a different experiment (its config.json differs); choose another "
                             "--out folder or delete that one")
    elif out.exists() and any(out.iterdir()):
        raise StateError(f"{out} is not empty and holds no influal config.json; choose another --out folder")


def _comparable(config_dict: dict) -> dict:
    """Config fields that define the experiment: the device and the scoring pass's memory layout do not, and a
    setting added later with a default compares as that default."""
    try:
        config_dict = ExperimentConfig.from_dict(config_dict).to_dict()
    except ConfigError:
        pass  # not a config this version can read: compare as written (and so refuse)
    comparable = {k: v for k, v in config_dict.items() if k != "device"}
    if isinstance(comparable.get("influence"), dict):
        comparable["influence"] = {k: v for k, v in comparable["influence"].items() if k != "memory_format"}
    return comparable


def run_experiment(config: ExperimentConfig, out: str | Path, *, splits: DatasetSplits | None = None,
                   model_factory: ModelFactory | None = None, progress: bool = False,
                   log: Log | None = None) -> dict[tuple[str, int], ActiveState]:
    """Run (or resume) a whole experiment and write its results under ``out``. See :class:`Experiment`."""
    experiment = Experiment.prepare(config, out, splits=splits, model_factory=model_factory)
    return experiment.run(progress=progress, log=log)
