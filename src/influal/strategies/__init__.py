"""Selection strategies, found by name in :data:`STRATEGIES`; ``make_strategy(name, **settings)`` builds one.

Every strategy is a :class:`~influal.api.Strategy` (one file each; the shared kernels are in :mod:`.kernels`).
Plug-ins register their own with :func:`register_strategy` or an ``influal.strategies`` entry point; a task's
folder registers the strategies that only make sense for it (detection: localization stability, ...).
"""

from __future__ import annotations

from typing import Any, Callable

from ..api import Selection, SelectionContext, Strategy, check_budget, take_lowest
from ..core.errors import ConfigError
from ..core.registry import Registry
from .badge import BADGEStrategy
from .bald import BALDStrategy
from .coreset import CoresetStrategy
from .isal import ISALStrategy
from .isal_batch import BatchISALStrategy
from .isal_diverse import DiverseISALStrategy
from .learning_loss import LearningLossStrategy
from .random import RandomStrategy
from .uncertainty import EntropyStrategy, LeastConfidenceStrategy, MarginStrategy

STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy", entry_point_group="influal.strategies")

for _cls in (RandomStrategy, ISALStrategy, BatchISALStrategy, DiverseISALStrategy, EntropyStrategy, MarginStrategy,
             LeastConfidenceStrategy, BALDStrategy, BADGEStrategy, LearningLossStrategy):
    STRATEGIES.register(_cls.name, _cls)
# det_coreset: the name detection runs used before core-set served every task through task.features
STRATEGIES.register(CoresetStrategy.name, CoresetStrategy, aliases=("det_coreset",))


def register_strategy(name: str, factory: Callable[..., Strategy], *, replace: bool = False) -> None:
    """Make ``make_strategy(name, ...)`` (and ``--strategies name``) build ``factory(**settings)``."""
    STRATEGIES.register(name, factory, replace=replace)


def make_strategy(name: str, **settings: Any) -> Strategy:
    """The strategy registered as ``name``, built with its own ``settings`` (e.g. ``make_strategy("isal",
    solver="cg", damping=0.01)``, ``make_strategy("bald", samples=10)``)."""
    factory = STRATEGIES.get(name)
    try:
        return factory(**settings)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r} does not take the setting(s) {', '.join(sorted(settings))} ({exc})"
                          ) from None


__all__ = ["STRATEGIES", "BADGEStrategy", "BALDStrategy", "BatchISALStrategy", "DiverseISALStrategy",
           "CoresetStrategy", "EntropyStrategy", "ISALStrategy", "LearningLossStrategy", "LeastConfidenceStrategy",
           "MarginStrategy", "RandomStrategy", "Selection", "SelectionContext", "Strategy", "check_budget",
           "make_strategy", "register_strategy", "take_lowest"]
