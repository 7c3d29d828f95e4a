"""Settings as frozen, validated dataclasses, saved as JSON next to every result, and turned into CLI flags.

Each class checks its own values at construction and raises :class:`ConfigError` with a message that says
what to change. ``to_dict`` / ``from_dict`` round-trip through plain JSON types. A field declared with
:func:`setting` carries its help text (and, optionally, its flag and choices): :func:`add_arguments` turns the
fields of any settings class into argparse flags, and :func:`given_arguments` reads back the ones a user gave,
so the command line is generated from these classes and never lists flags by hand.

This module holds the settings every task shares: the SGD recipe (:class:`TrainConfig`) and ISAL's influence
settings (:class:`InfluenceConfig`). Tasks define their own block (``tasks/<task>/settings.py``) and the loop
the experiment (``loop/config.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .core.errors import ConfigError

AUGMENTATIONS = ("none", "crop", "flip_crop")
SCOPES = ("auto", "last", "weights", "all")
SOLVERS = ("auto", "lissa", "lissa-auto", "cg", "exact", "identity", "ekfac", "kfac")
GS_METHODS = ("auto", "closed", "layerwise", "jvp", "fd", "vmap", "loop")
MEMORY_FORMATS = ("auto", "channels_last", "preserve")


def setting(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
            choices: tuple | None = None, cli: bool = True, default_factory: Any = dataclasses.MISSING,
            parse: Any = None):
    """A dataclass field with CLI metadata: ``help``, the ``flag`` (default ``--field-name``), ``choices``, and
    ``cli=False`` for fields that have no flag. ``parse`` converts the flag's text (default: from the type)."""
    metadata = {"help": help, "flag": flag, "choices": choices, "cli": cli, "parse": parse}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------- validators
def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """``value`` must be a finite real number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if allow_zero else value <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


def check_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}" + (" or null" if optional else "")
                          + f", got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


class Settings:
    """Base of every settings dataclass: JSON round-trip, ``replace``, and CLI metadata on its fields.

    ``_section`` names the block in messages (``train.lr``); a field whose type is another Settings class
    round-trips as a nested dict.
    """

    _section: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Settings):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def nested_types(cls) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = hints.get(f.name)
            candidates = typing.get_args(hint) or (hint,)
            for c in candidates:
                if isinstance(c, type) and issubclass(c, Settings):
                    out[f.name] = c
        return out

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}")
        nested = cls.nested_types()
        kwargs = {}
        for name, value in data.items():
            if name in nested and isinstance(value, dict):
                value = nested[name].from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a wrong type inside a check
            raise ConfigError(f"invalid {cls.__name__} settings: {exc}") from None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# ---------------------------------------------------------------------------------------------- CLI generation
def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)]


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _parser_for(cls: type, f: dataclasses.Field):
    custom = f.metadata.get("parse")
    if custom is not None:
        return custom
    hint = typing.get_type_hints(cls).get(f.name)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if base is bool:
        return _parse_bool
    if base in (int, float, str):
        return base
    origin = typing.get_origin(base)
    if origin is tuple:
        inner = (typing.get_args(base) or (str,))[0]
        return lambda text: tuple(inner(p.strip()) for p in text.split(",") if p.strip())
    return str


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(group, cls: type, dest_prefix: str, *, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per CLI field of ``cls`` to an argparse group; every default is None (= not given)."""
    for f in cli_fields(cls):
        if f.name in skip:
            continue
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text = f"{help_text} ({', '.join(map(str, choices))})" if help_text else ", ".join(map(str, choices))
        group.add_argument(flag_of(f), dest=f"{dest_prefix}{f.name}", type=_parser_for(cls, f), default=None,
                           help=help_text, metavar=f.name.upper())


def given_arguments(args: argparse.Namespace, cls: type, dest_prefix: str) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line (their flags' values)."""
    out = {}
    for f in cli_fields(cls):
        value = getattr(args, f"{dest_prefix}{f.name}", None)
        if value is not None:
            out[f.name] = value
    return out


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig(Settings):
    """A train-from-scratch SGD recipe (one per round), shared by every task.

    The rate is ``lr`` times ``gamma`` for every milestone (epoch, 0-based) passed; for the first
    ``warmup_iters`` optimiser steps it is divided by ``warmup_divisor`` (mmdetection's constant warm-up,
    ratio 1/3). ``grad_clip`` clips the gradient norm of the trained parameters.
    """

    _section: ClassVar[str] = "train"

    epochs: int = setting(30, help="training epochs per round")
    lr: float = setting(0.05, help="SGD learning rate")
    momentum: float = setting(0.9, cli=False)
    weight_decay: float = setting(5e-4, cli=False)
    batch_size: int = setting(64, help="training batch size")
    milestones: tuple[int, ...] = setting((24,), cli=False)
    gamma: float = setting(0.1, cli=False)
    augment: str = setting("none", help="training augmentation", choices=AUGMENTATIONS)
    drop_last: bool = setting(False, cli=False)
    nesterov: bool = setting(False, cli=False)
    warmup_iters: int = setting(0, cli=False)
    warmup_divisor: float = setting(3.0, cli=False)
    grad_clip: float | None = setting(None, cli=False)

    def __post_init__(self) -> None:
        check_int("train.epochs", self.epochs)
        check_positive("train.lr", self.lr)
        check_positive("train.momentum", self.momentum, allow_zero=True)
        check_positive("train.weight_decay", self.weight_decay, allow_zero=True)
        check_int("train.batch_size", self.batch_size)
        try:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        except (TypeError, ValueError):
            raise ConfigError(f"train.milestones must be a list of epochs, got {self.milestones!r}") from None
        if any(m < 1 or m > self.epochs for m in self.milestones):
            raise ConfigError(f"train.milestones must lie in 1..epochs ({self.epochs}), got {list(self.milestones)}")
        check_positive("train.gamma", self.gamma)
        check_choice("train.augment", self.augment, AUGMENTATIONS)
        check_int("train.warmup_iters", self.warmup_iters, minimum=0)
        check_positive("train.warmup_divisor", self.warmup_divisor)
        if self.grad_clip is not None:
            check_positive("train.grad_clip", self.grad_clip)

    def lr_at(self, epoch: int) -> float:
        """The epoch's rate: ``lr`` times ``gamma`` once per milestone reached (as torch's MultiStepLR)."""
        lr = self.lr
        for m in sorted(self.milestones):
            if m <= epoch:
                lr *= self.gamma
        return lr

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
    # after 8 and 11, constant warm-up at 1/3 of the rate for 50 steps, gradient norm clipped at 10.
    "detection-paper": TrainConfig(epochs=12, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=8,
                                   milestones=(8, 11), gamma=0.1, augment="none", warmup_iters=50, grad_clip=10.0),
    # Detection with the tiny backbone on CPU: the same recipe, longer (small labeled sets need more epochs).
    "detection": TrainConfig(epochs=20, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=8,
                             milestones=(15,), gamma=0.1, augment="none", warmup_iters=50, grad_clip=10.0),
}


# ---------------------------------------------------------------------------------------------- influence
@dataclass(frozen=True)
class InfluenceConfig(Settings):
    """How ISAL computes v, s_test = H^-1 v and the per-item scores.

    solver:
      ``lissa``      the supplement's Algorithm 1 (``h <- v + (1-d) h - H_z h / scale``); the fixed point is
                     ``scale * (H + d*scale I)^-1 v``, i.e. an effective damping of ``d*scale``. As in the
                     official code the result is *not* divided by ``scale`` (rankings are unaffected).
      ``lissa-auto`` LiSSA with the scale from a Lanczos estimate of the extreme eigenvalues and an explicit
                     damping (raised, with a warning, where the scope has negative curvature below -λ/2); its
                     Hessian mini-batches have at least 64 items whatever ``hvp_batch_size`` says (the default 1
                     is the paper's LiSSA setting); a depth cap is warned about and reported.
      ``cg``         conjugate gradient on ``(H + damping I) x = v``.
      ``exact``      dense Hessian + Cholesky (scopes up to ``exact_max_params`` parameters).
      ``identity``   ``s = v`` (the official code's "gradient similarity" ablation).
      ``ekfac``      ``(C + λI)^-1 v`` in closed form, C the eigenvalue-corrected Kronecker-factored Gauss-Newton
                     matrix of the scope's nn.Linear / nn.Conv2d layers (George et al. 2018), fitted in two
                     passes over the labeled set; an approximation of H, cheap on a whole network's weights.
      ``kfac``       the same with K-FAC's eigenvalues (one pass).

    The defaults are ``auto`` and the *task* resolves them (the engine never guesses): a classifier with a final
    nn.Linear gets scope ``last`` solved by ``cg`` at λ = 0.01, because its loss is convex in that layer, so
    H + λI is positive definite there and CG converges to the true damped inverse (checked against the exact
    solve to 1e-4, docs/benchmarks.md), deterministically, from features cached in one forward pass; scoring is
    a closed form as fast as inference. A task that offers no such scope (detectors) gets scope ``weights``
    solved by ``lissa`` with the paper's constants: where the loss is not convex in the scope, CG can meet
    negative curvature, and the heavily damped LiSSA is the robust choice. The paper's classification preset
    (``--influence-preset paper``: every weight tensor, LiSSA with effective damping 100) ranks the pool like
    ``s = v`` (Spearman ≈ 1.00 measured), i.e. it hardly applies an inverse Hessian, and costs several times
    more; on the offline benchmark both select equally well (within seed noise).

    Every solve reports ``converged`` in its info (copied into the round's selection summary). A LiSSA chain that
    grows beyond its fixed point (‖h‖ above 10 × the ‖v‖/d bound) raises SolverError when ``on_divergence`` is
    ``raise`` (the default); ``warn`` (the paper preset, to keep the official results) warns with
    :class:`~influal.core.errors.SolverWarning`, records ``diverged`` and keeps the result.

    ``memory_format`` is the layout of the v and scoring passes: ``auto`` runs a CPU model with 2-D
    convolutions channels-last when the task prefers it (oneDNN convolutions and pooling are much faster there;
    values are untouched, see :mod:`influal.influence.layout`), ``channels_last`` always, ``preserve`` never.
    """

    _section: ClassVar[str] = "influence"
    ON_DIVERGENCE: ClassVar[tuple[str, ...]] = ("raise", "warn")

    scope: str = setting("auto", help="parameters ISAL differentiates", choices=SCOPES)
    solver: str = setting("auto", help="inverse-HVP solver", choices=SOLVERS)
    damping: float = setting(0.01, help="damping λ of (H + λI) (LiSSA: d, with λ = d·scale)")
    scale: float = setting(1e4, help="LiSSA scale")
    lissa_depth: int = setting(250, help="LiSSA steps per chain")
    lissa_repeats: int = setting(4, help="LiSSA chains averaged")
    hvp_batch_size: int = setting(1, help="LiSSA mini-batch size of each Hessian-vector product")
    cg_max_iter: int = setting(200, cli=False)
    cg_tol: float = setting(1e-6, cli=False)
    exact_max_params: int = setting(20_000, cli=False)
    gs_method: str = setting("auto", choices=GS_METHODS,
                             help="per-item g·s: auto (exact: closed form, layerwise or jvp), fd (two forward passes)")
    batch_size: int = setting(256, cli=False)
    reference_size: int | None = setting(None, help="use a random subset of this many reference items for v")
    memory_format: str = setting("auto", help="layout of the scoring passes", choices=MEMORY_FORMATS)
    on_divergence: str = setting("raise", cli=False, choices=ON_DIVERGENCE,
                                 help="what a diverging LiSSA chain does: raise SolverError, or warn and keep it")

    def __post_init__(self) -> None:
        check_choice("influence.scope", self.scope, SCOPES)
        check_choice("influence.memory_format", self.memory_format, MEMORY_FORMATS)
        check_choice("influence.solver", self.solver, SOLVERS)
        check_choice("influence.gs_method", self.gs_method, GS_METHODS)
        check_positive("influence.damping", self.damping, allow_zero=True)
        check_positive("influence.scale", self.scale)
        for name in ("lissa_depth", "lissa_repeats", "hvp_batch_size", "cg_max_iter", "exact_max_params", "batch_size"):
            check_int(f"influence.{name}", getattr(self, name))
        check_positive("influence.cg_tol", self.cg_tol)
        check_int("influence.reference_size", self.reference_size, optional=True)
        check_choice("influence.on_divergence", self.on_divergence, self.ON_DIVERGENCE)

    @property
    def effective_damping(self) -> float:
        """The λ of the system ``(H + λI) s = v`` that the chosen solver targets: ``d·scale`` for ``lissa``,
        ``damping`` for ``lissa-auto`` (which may raise it at solve time where the Hessian has negative curvature,
        and reports the one it used), ``cg`` and ``exact``, infinite for ``identity``.

        ``solver="auto"`` has no damping of its own until the task resolves it (CG at ``damping``, or the paper's
        LiSSA at ``damping·scale``): asking raises ConfigError; resolve the config first with
        :func:`influal.influence.engine.resolve_config`, or read ``SolveResult.effective_damping`` (the round's
        selection summary records that one).
        """
        if self.solver == "auto":
            raise ConfigError("influence.solver 'auto' has no effective damping until the task resolves it (CG at "
                              f"λ = {self.damping:g} or the paper's LiSSA at λ = d·scale = "
                              f"{self.damping * self.scale:g}): resolve the config first with "
                              "influal.influence.engine.resolve_config(cfg, model, task)")
        if self.solver == "lissa":
            return self.damping * self.scale
        if self.solver == "identity":
            return math.inf
        return self.damping


INFLUENCE_PRESETS: dict[str, InfluenceConfig] = {
    # The official classification settings: all weight tensors, LiSSA 4 chains x 250, d=0.01, scale=1e4,
    # single-sample HVPs (drawn at random here; the official code reads the first 1000 labeled in file order).
    # A diverging chain warns (SolverWarning, `diverged` in the info) instead of raising: the official code
    # returns such a result, and the preset reproduces it.
    "paper": InfluenceConfig(scope="weights", solver="lissa", damping=0.01, scale=1e4,
                             lissa_depth=250, lissa_repeats=4, hvp_batch_size=1, on_divergence="warn"),
}
