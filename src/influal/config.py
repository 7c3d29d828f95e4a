"""Settings as frozen, validated dataclasses, saved as JSON next to every result.

Each class checks its own values at construction and raises :class:`ConfigError` with a message that
says what to change. ``to_dict`` / ``from_dict`` round-trip through plain JSON types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

AUGMENTATIONS = ("none", "crop", "flip_crop")
SCOPES = ("auto", "last", "weights", "all")
SOLVERS = ("auto", "lissa", "lissa-auto", "cg", "exact", "identity")
GS_METHODS = ("auto", "closed", "layerwise", "jvp", "vmap", "loop")
MEMORY_FORMATS = ("auto", "channels_last", "preserve")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value is None or (value < 0 if allow_zero else value <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Serializable):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}")
        kwargs = {}
        for name, value in data.items():
            sub = _NESTED.get((cls.__name__, name))
            if sub is not None and isinstance(value, dict):
                value = sub.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class TrainConfig(_Serializable):
    """A train-from-scratch SGD recipe (one per round)."""

    epochs: int = 30
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    milestones: tuple[int, ...] = (24,)
    gamma: float = 0.1
    augment: str = "none"
    drop_last: bool = False
    nesterov: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"train.epochs must be an integer >= 1, got {self.epochs!r}")
        _positive("train.lr", self.lr)
        _positive("train.momentum", self.momentum, allow_zero=True)
        _positive("train.weight_decay", self.weight_decay, allow_zero=True)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be an integer >= 1, got {self.batch_size!r}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if any(m < 1 or m > self.epochs for m in self.milestones):
            raise ConfigError(f"train.milestones must lie in 1..epochs ({self.epochs}), got {list(self.milestones)}")
        _positive("train.gamma", self.gamma)
        _choice("train.augment", self.augment, AUGMENTATIONS)

    @classmethod
    def preset(cls, name: str) -> "TrainConfig":
        if name not in TRAIN_PRESETS:
            raise ConfigError(f"unknown training preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}")
        return TRAIN_PRESETS[name]


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The paper's recipe (Learning-Loss CIFAR protocol): SGD 0.1, momentum 0.9, wd 5e-4, batch 128,
    # 200 epochs, x0.1 at 160, horizontal flip + pad-4 random crop, drop_last.
    "paper": TrainConfig(epochs=200, lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128,
                         milestones=(160,), gamma=0.1, augment="flip_crop", drop_last=True),
    # A short recipe for the offline MNIST subset on CPU.
    "demo": TrainConfig(epochs=30, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                        milestones=(24,), gamma=0.1, augment="none"),
    # A very short recipe for tests.
    "fast": TrainConfig(epochs=8, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=32,
                        milestones=(), gamma=0.1, augment="none"),
    # Detection, mmdetection's 1x schedule (the paper's): SGD 0.01, momentum 0.9, wd 1e-4, batch 8, 12 epochs, x0.1
    # after 8 and 11.
    "detection-paper": TrainConfig(epochs=12, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=8,
                                   milestones=(8, 11), gamma=0.1, augment="none"),
    # Detection with the tiny backbone on CPU: the same recipe, longer (small labeled sets need more epochs).
    "detection": TrainConfig(epochs=20, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=8,
                             milestones=(15,), gamma=0.1, augment="none"),
}


@dataclass(frozen=True)
class InfluenceConfig(_Serializable):
    """How ISAL computes v, s_test = H^-1 v and the per-item scores.

    solver:
      ``lissa``      the supplement's Algorithm 1 (``h <- v + (1-d) h - H_z h / scale``); the fixed point is
                     ``scale * (H + d*scale I)^-1 v``, i.e. an effective damping of ``d*scale``. As in the
                     official code the result is *not* divided by ``scale`` (rankings are unaffected).
      ``lissa-auto`` LiSSA with the scale from a power-iteration estimate of the top eigenvalue and an explicit
                     damping; divergence raises :class:`~influal.errors.SolverError`.
      ``cg``         conjugate gradient on ``(H + damping I) x = v``.
      ``exact``      dense Hessian + Cholesky (scopes up to ``exact_max_params`` parameters).
      ``identity``   ``s = v`` (the official code's "gradient similarity" ablation).

    The defaults are ``auto``: a classifier with a final nn.Linear gets scope ``last`` solved by ``cg`` at
    λ = 0.01; any other model or task (detectors) gets scope ``weights`` solved by ``lissa`` with the paper's
    constants. Why: the cross-entropy loss is convex in the final layer, so H + λI is positive definite there
    and CG converges to the true damped inverse (checked against the exact solve to 1e-4, docs/benchmarks.md),
    deterministically, from features cached in one forward pass; scoring is a closed form as fast as
    inference. Where the loss is not convex in the scope, CG can meet negative curvature, and the heavily
    damped LiSSA is the robust choice. The paper's classification preset (``--influence-preset paper``: every
    weight tensor, LiSSA with effective damping 100) ranks the pool like ``s = v`` (Spearman ≈ 1.00
    measured), i.e. it hardly applies an inverse Hessian, and costs several times more; on the offline
    benchmark both select equally well (within seed noise).

    ``memory_format`` is the layout of the v and scoring passes: ``auto`` runs a CPU model with 2-D
    convolutions channels-last (oneDNN convolutions and pooling are much faster there; values are untouched,
    see :mod:`influal.influence.layout`), ``channels_last`` always, ``preserve`` never.
    """

    scope: str = "auto"
    solver: str = "auto"
    damping: float = 0.01
    scale: float = 1e4
    lissa_depth: int = 250
    lissa_repeats: int = 4
    hvp_batch_size: int = 1
    cg_max_iter: int = 200
    cg_tol: float = 1e-6
    exact_max_params: int = 20_000
    gs_method: str = "auto"
    batch_size: int = 256
    reference_size: int | None = None
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        _choice("influence.scope", self.scope, SCOPES)
        _choice("influence.memory_format", self.memory_format, MEMORY_FORMATS)
        _choice("influence.solver", self.solver, SOLVERS)
        _choice("influence.gs_method", self.gs_method, GS_METHODS)
        _positive("influence.damping", self.damping, allow_zero=True)
        _positive("influence.scale", self.scale)
        for name in ("lissa_depth", "lissa_repeats", "hvp_batch_size", "cg_max_iter", "exact_max_params", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"influence.{name} must be an integer >= 1, got {value!r}")
        _positive("influence.cg_tol", self.cg_tol)
        if self.reference_size is not None and (not isinstance(self.reference_size, int) or self.reference_size < 1):
            raise ConfigError(f"influence.reference_size must be an integer >= 1 or null, got {self.reference_size!r}")

    @property
    def effective_damping(self) -> float:
        """The λ of the system ``(H + λI) s = v`` that the chosen solver targets (``auto``: as resolved)."""
        if self.solver == "lissa":
            return self.damping * self.scale
        return self.damping


INFLUENCE_PRESETS: dict[str, InfluenceConfig] = {
    # The official classification settings: all weight tensors, LiSSA 4 chains x 250, d=0.01, scale=1e4,
    # single-sample HVPs (drawn at random here; the official code reads the first 1000 labeled in file order).
    "paper": InfluenceConfig(scope="weights", solver="lissa", damping=0.01, scale=1e4,
                             lissa_depth=250, lissa_repeats=4, hvp_batch_size=1),
}


DETECTORS = ("fcos", "fasterrcnn")
DETECTION_BACKBONES = ("tiny", "resnet50-fpn")


@dataclass(frozen=True)
class DetectionConfig(_Serializable):
    """Object-detection settings (used when ``task == "detection"``; ignored otherwise).

    ``score_threshold`` turns the detector's post-NMS detections into pseudo-boxes (the paper's command: 0.1).
    ``image_size`` is the digit-canvas size; the detector resizes images to ``min_size``/``max_size`` (default:
    ``image_size``, so small images are not blown up to 800 px). ``weights`` is a local file only.
    ``target_ap`` (0..1) stops a run at the first round whose test AP reaches it (``rounds`` stays the cap).
    """

    detector: str = "fcos"
    backbone: str = "tiny"
    weights: str | None = None
    score_threshold: float = 0.1
    image_size: int = 128
    min_size: int | None = None
    max_size: int | None = None
    pool_size: int = 1000
    min_digits: int = 1
    max_digits: int = 4
    batch_size: int = 16
    grad_clip: float | None = 10.0
    warmup_iters: int = 50
    target_ap: float | None = None

    def __post_init__(self) -> None:
        _choice("detection.detector", self.detector, DETECTORS)
        _choice("detection.backbone", self.backbone, DETECTION_BACKBONES)
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"detection.score_threshold must lie in [0, 1], got {self.score_threshold!r}")
        for name in ("image_size", "pool_size", "min_digits", "max_digits", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"detection.{name} must be an integer >= 1, got {value!r}")
        if self.image_size < 32:
            raise ConfigError(f"detection.image_size must be >= 32 pixels, got {self.image_size}")
        if self.min_digits > self.max_digits:
            raise ConfigError(f"detection.min_digits ({self.min_digits}) exceeds max_digits ({self.max_digits})")
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 32):
                raise ConfigError(f"detection.{name} must be an integer >= 32 or null, got {value!r}")
        if self.grad_clip is not None:
            _positive("detection.grad_clip", self.grad_clip)
        if not isinstance(self.warmup_iters, int) or self.warmup_iters < 0:
            raise ConfigError(f"detection.warmup_iters must be an integer >= 0, got {self.warmup_iters!r}")
        if self.target_ap is not None and not 0.0 < self.target_ap <= 1.0:
            raise ConfigError(f"detection.target_ap must lie in (0, 1] (AP as a fraction), got {self.target_ap!r}")


@dataclass(frozen=True)
class ExperimentConfig(_Serializable):
    """One active-learning experiment: datasets, model, strategies, budget schedule, seeds.

    ``rounds`` counts trained-and-evaluated models: round 0 trains on the ``initial`` random set and
    rounds 1..rounds-1 each add ``budget`` items chosen by the strategy (the paper's "10 steps, 1k..10k").
    """

    dataset: str = "mnist5k"
    model: str = "cnn"
    strategies: tuple[str, ...] = ("isal", "random")
    initial: int = 100
    budget: int = 100
    rounds: int = 5
    seeds: int = 3
    first_seed: int = 0
    task: str = "classification"
    data_root: str | None = None
    val_size: int | None = None
    test_size: int | None = None
    device: str = "auto"
    train: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["demo"])
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    eval_batch_size: int = 512
    detection: DetectionConfig = field(default_factory=DetectionConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if not self.strategies:
            raise ConfigError("strategies must name at least one strategy, e.g. --strategies isal,random")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"strategies lists a name twice: {','.join(self.strategies)}")
        for name in ("initial", "budget", "rounds", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.first_seed, int) or self.first_seed < 0:
            raise ConfigError(f"first_seed must be an integer >= 0, got {self.first_seed!r}")
        for name in ("val_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if isinstance(self.influence, dict):
            object.__setattr__(self, "influence", InfluenceConfig.from_dict(self.influence))
        if isinstance(self.detection, dict):
            object.__setattr__(self, "detection", DetectionConfig.from_dict(self.detection))

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def final_labeled(self) -> int:
        """Number of labeled items after the last round."""
        return self.initial + self.budget * (self.rounds - 1)


_NESTED = {
    ("ExperimentConfig", "train"): TrainConfig,
    ("ExperimentConfig", "influence"): InfluenceConfig,
    ("ExperimentConfig", "detection"): DetectionConfig,
}
