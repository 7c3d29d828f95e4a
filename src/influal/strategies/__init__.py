"""Selection strategies; ``make_strategy(name)`` builds one by name."""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .base import Selection, SelectionContext, Strategy, check_budget, take_lowest
from .badge import BADGEStrategy
from .bald import BALDStrategy
from .coreset import CoresetStrategy
from .isal import ISALStrategy
from .learning_loss import LearningLossStrategy
from .random import RandomStrategy
from .uncertainty import EntropyStrategy, LeastConfidenceStrategy, MarginStrategy

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "random": RandomStrategy,
    "isal": ISALStrategy,
    "coreset": CoresetStrategy,
    "entropy": EntropyStrategy,
    "margin": MarginStrategy,
    "least_confidence": LeastConfidenceStrategy,
    "bald": BALDStrategy,
    "badge": BADGEStrategy,
    "learning_loss": LearningLossStrategy,
}


def _detection_strategy(name: str) -> Callable[[], Strategy]:
    def build() -> Strategy:
        from ..detection.strategies import DETECTION_STRATEGIES as BUILDERS  # imports torchvision's detectors lazily

        return BUILDERS[name]()

    return build


# Strategies for object detection only (random and isal serve both tasks and live in STRATEGIES).
DETECTION_STRATEGIES: dict[str, Callable[[], Strategy]] = {
    name: _detection_strategy(name) for name in ("localization_stability", "det_coreset", "det_learning_loss")
}


def make_strategy(name: str) -> Strategy:
    if name in DETECTION_STRATEGIES and name not in STRATEGIES:
        return DETECTION_STRATEGIES[name]()
    if name not in STRATEGIES:
        known = sorted(set(STRATEGIES) | set(DETECTION_STRATEGIES))
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(known)}")
    return STRATEGIES[name]()


__all__ = ["DETECTION_STRATEGIES", "STRATEGIES", "BADGEStrategy", "BALDStrategy", "CoresetStrategy", "EntropyStrategy", "ISALStrategy",
           "LearningLossStrategy", "LeastConfidenceStrategy", "MarginStrategy", "RandomStrategy", "Selection",
           "SelectionContext", "Strategy", "check_budget", "make_strategy", "take_lowest"]
