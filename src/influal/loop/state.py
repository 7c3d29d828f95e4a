"""Per-(strategy, seed) active-learning state, saved atomically as JSON after every round."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import StateError
from ..core.io import atomic_write_json, read_json

STATE_VERSION = 1


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


@dataclass
class ActiveState:
    strategy: str
    seed: int
    labeled_ids: list[int]
    unlabeled_ids: list[int]
    rounds: list[RoundRecord] = field(default_factory=list)

    @classmethod
    def start(cls, strategy: str, seed: int, initial_ids, pool_size: int) -> "ActiveState":
        initial = sorted(int(i) for i in initial_ids)
        chosen = set(initial)
        return cls(strategy, seed, initial, [i for i in range(pool_size) if i not in chosen])

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
        return {"version": STATE_VERSION, "strategy": self.strategy, "seed": self.seed,
                "labeled_ids": self.labeled_ids, "unlabeled_ids": self.unlabeled_ids,
                "rounds": [asdict(r) for r in self.rounds]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ActiveState":
        if data.get("version") != STATE_VERSION:
            raise StateError(f"state version {data.get('version')!r} is not supported (expected {STATE_VERSION})")
        return cls(data["strategy"], int(data["seed"]), [int(i) for i in data["labeled_ids"]],
                   [int(i) for i in data["unlabeled_ids"]], [RoundRecord(**r) for r in data["rounds"]])

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ActiveState":
        try:
            return cls.from_dict(read_json(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{path} is not a valid influal state file ({exc}); delete it to restart that run") from None

    def labeled_array(self) -> np.ndarray:
        return np.asarray(self.labeled_ids, dtype=np.int64)

    def unlabeled_array(self) -> np.ndarray:
        return np.asarray(self.unlabeled_ids, dtype=np.int64)
