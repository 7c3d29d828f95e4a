"""Selection strategies; ``make_strategy(name)`` builds one by name."""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .base import Selection, SelectionContext, Strategy, check_budget, take_lowest
from .isal import ISALStrategy
from .random import RandomStrategy

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "random": RandomStrategy,
    "isal": ISALStrategy,
}


def make_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]()


__all__ = ["STRATEGIES", "ISALStrategy", "RandomStrategy", "Selection", "SelectionContext", "Strategy",
           "check_budget", "make_strategy", "take_lowest"]
