"""Named experiment presets: the ISAL paper's classification protocols and one offline benchmark.

``influal run --preset NAME`` fills every setting a preset names; any flag given explicitly on the command
line overrides it. The paper protocols (supplement §5.1 and the official scripts) need a local copy of the
data (``--data-root``); influal never downloads anything.

Deviations from the paper, on purpose:
- the reference set of ISAL is a held-out validation split of the training set (2,000 images by default),
  never the test set the accuracy is reported on (the official code used the test set);
- ``cifar10-large`` stops at 45,000 labels (9 rounds): the paper's 10th step is the full 50,000-image
  training set, which is no longer an active-learning choice and does not fit beside a held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..settings import INFLUENCE_PRESETS, TRAIN_PRESETS
from .config import ExperimentConfig

PAPER_STRATEGIES = ("isal", "random", "coreset", "learning_loss")


@dataclass(frozen=True)
class Preset:
    """A named set of :class:`~influal.loop.config.ExperimentConfig` fields and what the preset reproduces."""

    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    needs_data_root: bool = False

    def config(self, **overrides) -> ExperimentConfig:
        """The preset's experiment config, with ``overrides`` (ExperimentConfig fields) applied on top."""
        if self.needs_data_root and overrides.get("data_root", self.settings.get("data_root")) is None:
            raise ConfigError(f"preset {self.name} needs --data-root pointing at a local {self.settings['dataset']} "
                              "copy (influal never downloads data)")
        values = dict(self.settings)
        given = overrides.pop("strategy_settings", {}) or {}
        values.update(overrides)
        merged = {name: dict(settings) for name, settings in values.get("strategy_settings", {}).items()}
        for name, settings in given.items():
            merged.setdefault(name, {}).update(settings)
        strategies = set(values.get("strategies", ()))
        values["strategy_settings"] = {k: v for k, v in merged.items() if k in strategies}
        return ExperimentConfig(**values)


def _paper(dataset: str, initial: int, budget: int, rounds: int, **extra) -> dict[str, Any]:
    base = dict(dataset=dataset, model="resnet18", strategies=PAPER_STRATEGIES, initial=initial, budget=budget,
                rounds=rounds, seeds=5, train=TRAIN_PRESETS["paper"],
                strategy_settings={"isal": INFLUENCE_PRESETS["paper"].to_dict()})
    base.update(extra)
    return base


# The offline benchmark: the MNIST subset (pool 3500, reference 500, test 1000), 100 random digits, then 100
# per round up to 800, the small CNN with the 30-epoch demo recipe, 3 seeds. See docs/benchmarks.md.
BENCH_STRATEGIES = ("isal", "random", "coreset", "entropy", "learning_loss")
BENCH_INFLUENCE = INFLUENCE_PRESETS["paper"]  # ISAL as published; see docs/benchmarks.md

PRESETS: dict[str, Preset] = {
    "cifar10": Preset("cifar10", "CIFAR-10, supplement Table 1: ResNet-18, 1,000 random + 1,000 per round, 10 rounds "
                      "(1k..10k), 200 epochs SGD (the Learning-Loss recipe), 5 seeds",
                      _paper("cifar10", 1000, 1000, 10), needs_data_root=True),
    "cifar100": Preset("cifar100", "CIFAR-100, supplement Table 2: as cifar10 (the paper does not state the CIFAR-100 "
                       "budget; the official script's default, 2% of the training set = 1,000 per round, is used)",
                       _paper("cifar100", 1000, 1000, 10), needs_data_root=True),
    "svhn": Preset("svhn", "SVHN: ResNet-18, 1,466 random + 1,466 per round (2% of the 73,257 training images), "
                   "10 rounds, 200 epochs", _paper("svhn", 1466, 1466, 10), needs_data_root=True),
    "cifar10-large": Preset("cifar10-large", "CIFAR-10 large scale, supplement Table 3: 5,000 random + 5,000 per "
                            "round, 9 rounds (5k..45k)", _paper("cifar10", 5000, 5000, 9), needs_data_root=True),
    "mnist5k-bench": Preset("mnist5k-bench", "offline label-efficiency benchmark on the MNIST subset: small CNN, "
                            "100 + 100 per round, 8 rounds (100..800 labels), 3 seeds, isal/random/coreset/entropy/learning_loss",
                            dict(dataset="mnist5k", model="cnn", strategies=BENCH_STRATEGIES, initial=100,
                                 budget=100, rounds=8, seeds=3, train=TRAIN_PRESETS["demo"],
                                 strategy_settings={"isal": BENCH_INFLUENCE.to_dict()})),
    "mnist5k-low": Preset("mnist5k-low", "offline low-budget benchmark on the MNIST subset: as mnist5k-bench with 40 "
                          "random + 40 per round, 8 rounds (40..320 labels), 5 seeds",
                          dict(dataset="mnist5k", model="cnn", strategies=BENCH_STRATEGIES, initial=40, budget=40,
                               rounds=8, seeds=5, train=TRAIN_PRESETS["demo"],
                               strategy_settings={"isal": BENCH_INFLUENCE.to_dict()})),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["PRESETS", "Preset", "get_preset"]
