"""The experiment's settings: data, model, strategies and their own settings, budget schedule, seeds.

Task-blind: ``task`` names a registered task plug-in, which gives the defaults (data set, model, training recipe)
and the class of ``task_settings``. Each strategy's settings are in ``strategy_settings`` (resolved to the full
set of each strategy's parameters, so config.json says exactly what ran).

config.json carries ``"version": 2``. Version 1 files (written before the task plug-ins) are read as they were
meant: their ``influence`` block becomes ISAL's settings, and their ``detection`` block becomes the detector family
(``model``), the training warm-up and clipping (``train``), ``stop_at`` and the detection settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core.errors import ConfigError
from ..settings import Settings, TrainConfig, check_int
from ..strategies import STRATEGIES, ISALStrategy, make_strategy
from ..tasks import get_task

CONFIG_VERSION = 2
MAX_SEEDS = 10_000
MAX_ROUNDS = 100_000
# fields a results folder may be extended in (more strategies, more seeds); every other field defines the experiment
EXTENSIBLE = ("strategies", "seeds", "strategy_settings")
IGNORED = ("device", "version", "provenance")  # where it runs, not what it computes
# strategy settings that change how a run goes, not what it computes: the memory layout of the scoring passes, and
# whether a diverging LiSSA chain raises or warns (version-1 files have neither)
RUN_ONLY = ("memory_format", "on_divergence")


@dataclass(frozen=True)
class ExperimentConfig(Settings):
    """One active-learning experiment.

    ``rounds`` counts trained-and-evaluated models: round 0 trains on the ``initial`` random set and
    rounds 1..rounds-1 each add ``budget`` items chosen by the strategy (the paper's "10 steps, 1k..10k").
    ``dataset``, ``model``, ``train`` and ``task_settings`` default to the task's own. ``stop_at`` ends a run at
    the first round whose test metric reaches it (a fraction; ``rounds`` stays the cap).
    """

    _section: ClassVar[str] = "experiment"

    task: str = "classification"
    dataset: str | None = None
    model: str | None = None
    strategies: tuple[str, ...] = ("isal", "random")
    initial: int = 100
    budget: int = 100
    rounds: int = 5
    seeds: int = 3
    first_seed: int = 0
    data_root: str | None = None
    val_size: int | None = None
    test_size: int | None = None
    device: str = "auto"
    train: TrainConfig | None = None
    strategy_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_settings: Settings | None = None
    eval_batch_size: int = 512
    stop_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ConfigError(f"task must be a task's name, got {self.task!r}")
        for name in ("dataset", "model", "data_root"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a name (text) or null, got {value!r}")
        if not isinstance(self.device, str):
            raise ConfigError(f"device must be a device's name (auto, cpu, cuda), got {self.device!r}")
        if not isinstance(self.strategies, (list, tuple)) or not all(isinstance(n, str) for n in self.strategies):
            raise ConfigError(f"strategies must be a list of strategy names, e.g. ['isal', 'random'], got "
                              f"{self.strategies!r}")
        if not isinstance(self.train, (TrainConfig, dict, type(None))):
            raise ConfigError(f"train must be a TrainConfig or a JSON object, got {self.train!r}")
        if not isinstance(self.task_settings, (Settings, dict, type(None))):
            raise ConfigError(f"task_settings must be a JSON object, got {self.task_settings!r}")
        if not isinstance(self.strategy_settings, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) for k, v in self.strategy_settings.items()):
            raise ConfigError("strategy_settings must map strategy names to objects of settings, got "
                              f"{self.strategy_settings!r}")
        plugin = get_task(self.task)
        if self.dataset is None:
            object.__setattr__(self, "dataset", plugin.default_dataset)
        if self.model is None:
            object.__setattr__(self, "model", plugin.default_model)
        if self.train is None:
            object.__setattr__(self, "train", TrainConfig.preset(plugin.default_train_preset))
        elif isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if self.task_settings is None:
            object.__setattr__(self, "task_settings", plugin.settings_class())
        elif isinstance(self.task_settings, dict):
            object.__setattr__(self, "task_settings", plugin.settings_class.from_dict(self.task_settings))
        elif not isinstance(self.task_settings, plugin.settings_class):
            raise ConfigError(f"task_settings of task {self.task!r} must be a {plugin.settings_class.__name__}, got "
                              f"{type(self.task_settings).__name__}")
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if not self.strategies:
            raise ConfigError("strategies must name at least one strategy, e.g. --strategies isal,random")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"strategies lists a name twice: {','.join(self.strategies)}")
        for name in ("initial", "budget", "rounds", "seeds"):
            check_int(name, getattr(self, name))
        if self.seeds > MAX_SEEDS or self.rounds > MAX_ROUNDS:
            raise ConfigError(f"seeds must be at most {MAX_SEEDS} and rounds at most {MAX_ROUNDS}, got seeds "
                              f"{self.seeds}, rounds {self.rounds}")
        check_int("first_seed", self.first_seed, minimum=0)
        check_int("eval_batch_size", self.eval_batch_size)
        for name in ("val_size", "test_size"):
            check_int(name, getattr(self, name), optional=True)
        if self.stop_at is not None and (isinstance(self.stop_at, bool) or not isinstance(self.stop_at, (int, float))
                                         or not 0.0 < self.stop_at <= 1.0):
            raise ConfigError(f"stop_at must lie in (0, 1] (the metric as a fraction), got {self.stop_at!r}")
        unknown = sorted(set(self.strategy_settings) - set(self.strategies))
        if unknown:
            raise ConfigError(f"strategy_settings names {', '.join(unknown)}, which is not among the strategies "
                              f"({', '.join(self.strategies)})")
        resolved = {name: self.build_strategy(name).settings() for name in self.strategies}
        object.__setattr__(self, "strategy_settings", resolved)

    def build_strategy(self, name: str):
        """The strategy ``name`` with its settings from this config."""
        given = self.strategy_settings.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"the settings of strategy {name!r} must be a mapping, got {type(given).__name__}")
        return make_strategy(name, **given)

    def experiment_id(self, strategy: str) -> str:
        """What a state file of ``strategy`` belongs to: a hash of every field that defines the experiment, and of
        that strategy's own settings (so that more seeds or strategies do not change it)."""
        import hashlib
        import json

        data = {k: v for k, v in self.to_dict().items() if k not in EXTENSIBLE + IGNORED}
        own = {k: v for k, v in self.strategy_settings.get(strategy, {}).items() if k not in RUN_ONLY}
        text = json.dumps({"experiment": data, "strategy": strategy, "settings": own}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def final_labeled(self) -> int:
        """Number of labeled items after the last round."""
        return self.initial + self.budget * (self.rounds - 1)

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with ``changes``; settings of strategies no longer listed are dropped."""
        if "strategies" in changes and "strategy_settings" not in changes:
            keep = set(changes["strategies"])
            changes["strategy_settings"] = {k: v for k, v in self.strategy_settings.items() if k in keep}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {"version": CONFIG_VERSION}
        out.update(super().to_dict())
        out["strategy_settings"] = {k: dict(v) for k, v in self.strategy_settings.items()}
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "ExperimentConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"an experiment config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        data.pop("provenance", None)  # recorded beside the settings, checked by the loop
        version = data.pop("version", 1)
        if version == 1:
            try:
                data = migrate_v1(data)
            except (TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"invalid experiment config (version 1): {exc}") from None
        elif version != CONFIG_VERSION:
            raise ConfigError(f"config version {version!r} is not supported by this influal (it reads versions 1 "
                              f"and {CONFIG_VERSION}); upgrade influal or start a new results folder")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) for ExperimentConfig: {', '.join(unknown)}")
        if isinstance(data.get("strategies"), list):
            data["strategies"] = tuple(data["strategies"])
        try:
            return cls(**data)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ConfigError(f"invalid experiment config: {type(exc).__name__}: {exc}") from None


def isal_family(name: str) -> bool:
    """Whether strategy ``name`` takes ISAL's influence settings (ISAL and its registered variants)."""
    factory = STRATEGIES.get(name)
    return isinstance(factory, type) and issubclass(factory, ISALStrategy)


def migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 config dict (influal 0.1: top-level ``influence`` and ``detection`` blocks) as version 2."""
    data = dict(data)
    influence = data.pop("influence", None)
    detection = data.pop("detection", None)
    strategies = list(data.get("strategies", ("isal", "random")))
    if influence is not None:
        data["strategy_settings"] = {name: dict(influence) for name in strategies if name in STRATEGIES
                                     and isal_family(name)}
    task = data.get("task", "classification")
    if task == "detection":
        detection = dict(detection or {})
        data["model"] = detection.pop("detector", "fcos")
        train = dict(data.get("train") or TrainConfig.preset("detection").to_dict())
        train.setdefault("grad_clip", detection.pop("grad_clip", 10.0))
        train.setdefault("warmup_iters", detection.pop("warmup_iters", 50))
        data["train"] = train
        target = detection.pop("target_ap", None)
        if target is not None:
            data["stop_at"] = target
        data["task_settings"] = detection
    return data
