"""Per-(strategy, seed) active-learning state, saved atomically as JSON after every round, and checked on load.

A state file (version 2) carries a SHA-256 checksum of its content, the strategy, the seed and the id of the
experiment it belongs to. :func:`load_state` refuses, naming the file and the problem, a file that is not JSON or not
an object, whose checksum does not match (edited or corrupted), that belongs to another strategy, seed or experiment
(copied in from elsewhere), or whose rounds do not replay: the initial set must be the seed's, each round must add
exactly its ``selected`` ids to the labeled set, the unlabeled ids must be the rest of the pool, and no round may lie
beyond the experiment's last. Version-1 files (influal 0.1) have no checksum and no experiment id; they are replayed
and resumed, and saved as version 2.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import StateError
from ..core.io import atomic_write_json, read_json
from ..core.seeding import derive_seed

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)


def initial_labeled(pool_size: int, size: int, seed: int) -> np.ndarray:
    """The seed's random initial labeled set, shared by every strategy of that seed."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "initial"))
    return np.sort(torch.randperm(pool_size, generator=gen)[:size].numpy())


@dataclass
class RoundRecord:
    """One trained-and-evaluated model: what it was trained on, how it scored, and what it selected next."""

    round: int
    labeled: int
    cost: float
    metrics: dict[str, float]
    selected: list[int] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    world_size: int = 1  # torch.distributed processes that computed the round (the same result for any number)


def _checksum(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ActiveState:
    strategy: str
    seed: int
    labeled_ids: list[int]
    unlabeled_ids: list[int]
    rounds: list[RoundRecord] = field(default_factory=list)
    experiment: str | None = None

    @classmethod
    def start(cls, strategy: str, seed: int, initial_ids, pool_size: int, experiment: str | None = None
              ) -> "ActiveState":
        initial = sorted(int(i) for i in initial_ids)
        chosen = set(initial)
        return cls(strategy, seed, initial, [i for i in range(pool_size) if i not in chosen], experiment=experiment)

    @property
    def next_round(self) -> int:
        return len(self.rounds)

    def add_round(self, record: RoundRecord) -> None:
        """Append a finished round and move its selection from the unlabeled to the labeled ids."""
        if record.round != self.next_round:
            raise StateError(f"round {record.round} recorded out of order (expected {self.next_round})")
        selected = [int(i) for i in record.selected]
        pending = set(selected)
        if len(pending) != len(selected):
            raise StateError(f"round {record.round} selected an id twice")
        if pending & set(self.labeled_ids):
            raise StateError(f"round {record.round} selected ids that are already labeled")
        remaining = [i for i in self.unlabeled_ids if i not in pending]
        if len(remaining) != len(self.unlabeled_ids) - len(selected):
            raise StateError(f"round {record.round} selected ids that are not in the pool")
        self.rounds.append(record)
        self.labeled_ids = self.labeled_ids + selected
        self.unlabeled_ids = remaining

    def to_dict(self) -> dict[str, Any]:
        data = {"version": STATE_VERSION, "strategy": self.strategy, "seed": self.seed, "experiment": self.experiment,
                "labeled_ids": self.labeled_ids, "unlabeled_ids": self.unlabeled_ids,
                "rounds": [asdict(r) for r in self.rounds]}
        data["checksum"] = _checksum(data)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ActiveState":
        if not isinstance(data, dict):
            raise StateError(f"a state must be a JSON object, not {type(data).__name__}")
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise StateError(f"state version {version!r} is not supported (this influal reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        if version >= 2 and data.get("checksum") != _checksum(data):
            raise StateError("its checksum does not match its content (the file was edited or corrupted)")
        try:
            rounds = [RoundRecord(**r) for r in data["rounds"]]
            state = cls(str(data["strategy"]), _int(data["seed"]), [_int(i) for i in data["labeled_ids"]],
                        [_int(i) for i in data["unlabeled_ids"]], rounds, data.get("experiment"))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"it does not have the fields of a state ({type(exc).__name__}: {exc})") from None
        return state

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ActiveState":
        """Read a state file (its own consistency only; :func:`load_state` checks it against the experiment)."""
        try:
            return cls.from_dict(read_json(path))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StateError(f"{path} is not a readable influal state file ({type(exc).__name__}); delete it to "
                             "restart that run") from None
        except StateError as exc:
            raise StateError(f"{path}: {exc}; delete it to restart that run") from None

    def labeled_array(self) -> np.ndarray:
        return np.asarray(self.labeled_ids, dtype=np.int64)

    def unlabeled_array(self) -> np.ndarray:
        return np.asarray(self.unlabeled_ids, dtype=np.int64)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def check_replay(state: ActiveState, *, pool_size: int, initial: int, budget: int, rounds: int) -> None:
    """The rounds of ``state`` must replay: the seed's initial set, then each round's selection, in order."""
    labeled, unlabeled = state.labeled_ids, state.unlabeled_ids
    if len(labeled) + len(unlabeled) != pool_size or len(set(labeled) | set(unlabeled)) != pool_size:
        raise StateError(f"its labeled and unlabeled ids do not partition the pool of {pool_size} items")
    expected_initial = initial_labeled(pool_size, initial, state.seed).tolist()
    if sorted(labeled[:initial]) != expected_initial:
        raise StateError(f"its first {initial} labeled ids are not seed {state.seed}'s initial set")
    if unlabeled != sorted(unlabeled):
        raise StateError("its unlabeled ids are out of order")
    if len(state.rounds) > rounds:
        raise StateError(f"it records {len(state.rounds)} rounds; the experiment has {rounds}")
    position = initial
    for k, record in enumerate(state.rounds):
        if record.round != k:
            raise StateError(f"its rounds are out of order (round {record.round} at position {k})")
        if record.labeled != position:
            raise StateError(f"round {k} says {record.labeled} labeled items; the replay gives {position}")
        if not isinstance(record.metrics, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in record.metrics.values()):
            raise StateError(f"round {k} has metrics that are not numbers")
        if not isinstance(record.cost, (int, float)) or isinstance(record.cost, bool) or math.isnan(record.cost):
            raise StateError(f"round {k} has a cost that is not a number")
        chosen = [int(i) for i in record.selected]
        if chosen:
            if len(chosen) != budget:
                raise StateError(f"round {k} selected {len(chosen)} items; the budget is {budget}")
            if labeled[position:position + budget] != chosen:
                raise StateError(f"round {k}'s selection is not the labeled ids that follow it")
            position += budget
        elif k != len(state.rounds) - 1:
            raise StateError(f"round {k} selected nothing but is not the last round")
    if position != len(labeled):
        raise StateError(f"it holds {len(labeled)} labeled ids; its rounds add up to {position}")


def load_state(path: Path, *, strategy: str, seed: int, experiment: str, pool_size: int | None, initial: int,
               budget: int, rounds: int) -> ActiveState:
    """Load ``path`` and check that it belongs here (strategy, seed, experiment) and replays; StateError otherwise,
    naming the file. ``pool_size=None``: the pool the state itself spans (when the data is not at hand). Nothing is
    changed on disk: the last good rounds stay as they were."""
    if not path.is_file():
        raise StateError(f"{path} is not a file; remove it to restart that run")
    state = ActiveState.load(path)
    try:
        if state.strategy != strategy or state.seed != seed:
            raise StateError(f"it belongs to strategy {state.strategy!r} seed {state.seed}, not to {strategy!r} seed "
                             f"{seed} (copied from elsewhere?)")
        if state.experiment is not None and state.experiment != experiment:
            raise StateError("it belongs to another experiment (its settings differ from this config.json's)")
        if pool_size is None:
            pool_size = len(state.labeled_ids) + len(state.unlabeled_ids)
        check_replay(state, pool_size=pool_size, initial=initial, budget=budget, rounds=rounds)
    except StateError as exc:
        raise StateError(f"{path}: {exc}; restore it or delete it to restart that run") from None
    state.experiment = experiment
    return state
