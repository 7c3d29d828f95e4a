"""The contracts every part of influal meets: Task, its influence hooks, Strategy, SelectionContext, Selection.

- A :class:`Task` is the only integration point for a kind of problem (classification, detection, yours): it
  batches data, computes per-sample losses and pseudo-targets, trains, evaluates and counts labeling cost.
  Optional capabilities (``capabilities``) say what else it offers strategies: embeddings, class
  probabilities, a classifier head, a training-loss hook, detections.
- :class:`InfluenceHooks` are what a task may offer the influence engine (a closed-form per-sample g·s, an
  exact Hessian for a scope, a fused pseudo-label); the engine uses them when offered and never guesses.
- A :class:`Strategy` answers one question: given a trained model, the labeled ids L, the unlabeled candidates U
  and a budget B, which B items of U should be labeled next? It returns a :class:`Selection`.
- A :class:`TaskPlugin` is what a task's folder registers: its settings block, data-set formats, models, the
  task object for an experiment and its report section.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .core.errors import ConfigError

# Capabilities a task may declare (Task.capabilities) and a strategy may require (Strategy.requires).
FEATURES = "features"                # task.features(model, inputs) -> [n, d] embeddings (core-set)
PROBABILITIES = "probabilities"      # task.predict_proba(model, dataset, ids) -> [n, C] (entropy, margin, ...)
CLASSIFIER_HEAD = "classifier_head"  # task.head(model) -> final nn.Linear; task.features_and_logits(model, x)
LOSS_HOOK = "loss_hook"              # task.train(..., loss_fn=...) trains with a strategy's own objective
DETECTIONS = "detections"            # task.detect(model, dataset, ids) and detector features (detection strategies)
REFERENCE_SET = "reference_set"      # a strategy needs a labeled reference (validation) set (ISAL)


class NotSupported(ConfigError):
    """A task or model lacks a capability a strategy needs."""


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DatasetSplits:
    """The three disjoint parts of an experiment: the unlabeled pool, the reference (validation) set, the test set.

    ``num_classes``, ``in_channels`` and ``image_size`` describe the inputs for model builders; ``identity``
    holds what a data-set format knows about where the data came from (recorded in config.json).
    """

    name: str
    pool: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    identity: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"{self.name}: pool {len(self.pool)}, validation {len(self.val)}, test {len(self.test)}, "
                f"{self.num_classes} classes, {self.in_channels}x{self.image_size}x{self.image_size}")


# ---------------------------------------------------------------------------------------------- task
class InfluenceHooks:
    """What a task may offer the influence engine. Every method returns ``None`` / ``False`` when it does not
    apply, and the engine then takes its generic path (layerwise, JVP, vmap, loop; double-backward Hessian).

    Hooks must honour the task's own loss: a hook that cannot (a subclass changed the loss in a way the hook
    does not know) must not be offered.
    """

    fuses_pseudo_targets: bool = False  # per_sample_dot(targets=None) takes the pseudo-targets from its own pass
    prefers_channels_last: bool = False  # CPU passes over convolutions may run channels-last (measured faster)
    layers_are_modules: bool = True  # the loss runs the scope's layers through their modules (K-FAC's hooks see them)

    def scope_names(self, model: nn.Module, scope: str) -> list[str] | None:
        """The parameter names a named scope (``"last"``) means for this model, or None if the task defines none."""
        return None

    def auto_scope(self, model: nn.Module) -> str | None:
        """The parameter scope ``scope="auto"`` means for this model, or None for the engine's default."""
        return None

    def convex_scope(self, model: nn.Module, scope: Any) -> bool:
        """Whether the loss is convex in ``scope`` (a ParamScope), so ``solver="auto"`` may use CG."""
        return False

    def preferred_method(self, model: nn.Module, scope: Any) -> str | None:
        """The per-sample g·s method ``gs_method="auto"`` means, or None for the engine's choice."""
        return None

    def supports(self, method: str, model: nn.Module, scope: Any) -> bool:
        """Whether :meth:`per_sample_dot` handles ``method`` on this scope (the engine checks ``closed`` here)."""
        return False

    def per_sample_dot(self, model: nn.Module, inputs: Any, targets: Any, scope: Any, s: torch.Tensor,
                       method: str) -> torch.Tensor | None:
        """g_i·s for every sample of a batch [n] (``targets=None``: the pseudo-targets), or None."""
        return None

    def per_sample_grads(self, model: nn.Module, inputs: Any, targets: Any, scope: Any) -> torch.Tensor | None:
        """Every sample's flat gradient on ``scope`` [n, scope.numel] (``targets=None``: the pseudo-targets), or
        None for the engine's generic path (one backward per sample)."""
        return None

    def fisher_loss(self, model: nn.Module, inputs: Any, uniforms: torch.Tensor) -> torch.Tensor | None:
        """Per-sample losses [n] at targets drawn from the model's own predictive distribution, so that their
        gradients' covariance is the Gauss-Newton matrix in expectation (the K-FAC solvers' "true" Fisher), or
        None: those solvers then take the training loss at the true labels (the empirical Fisher). Item i's draw
        comes from ``uniforms[i]`` (float64 in [0, 1), on the CPU), so it depends on the item, not on the batch
        or the rank it falls in."""
        return None

    def hessian(self, model: nn.Module, dataset: Dataset, ids: np.ndarray, scope: Any, batch_size: int):
        """An operator with ``full(v)``, ``sample(v, generator, batch_size)`` and ``dense()`` for the mean
        labeled loss on ``scope``, cheaper than double backward, or None."""
        return None


class Task(ABC):
    """The only place that knows what a label, a loss, a metric and a cost are.

    A batch is ``(ids, inputs, targets)`` on the task's device. ``loss`` returns per-sample losses [n] and only
    *calls* ``model`` (the influence engine may pass a functional wrapper). Implement the abstract methods; set
    ``capabilities`` and override the matching optional methods for what your task offers strategies.
    """

    metric_name: ClassVar[str] = "metric"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    device: torch.device = torch.device("cpu")
    eval_batch_size: int = 256

    @abstractmethod
    def batches(self, dataset: Dataset, ids: Sequence[int], batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[tuple[Any, Any, Any]]:
        """Yield ``(ids, inputs, targets)`` on the task's device (see :func:`influal.core.batching.iterate_batches`)."""

    @abstractmethod
    def loss(self, model: Callable, inputs: Any, targets: Any) -> torch.Tensor:
        """Per-sample training losses, shape [n]."""

    @abstractmethod
    def pseudo_targets(self, model: Callable, inputs: Any) -> Any:
        """The model's own guess of the targets (argmax class, boxes above a score threshold)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, dataset: Dataset, ids: Sequence[int] | None = None) -> dict[str, float]:
        """Metrics on a data set; must include ``metric_name``."""

    @abstractmethod
    def train(self, model: nn.Module, dataset: Dataset, ids: Sequence[int], cfg: Any, generator: torch.Generator,
              *, progress: bool = False, loss_fn: Callable | None = None) -> nn.Module:
        """Train a freshly initialised ``model`` on ``ids`` (:func:`influal.training.train_sgd` does the SGD);
        return it in eval mode. ``loss_fn`` only where the task declares ``loss_hook``."""

    def ready(self, model: nn.Module) -> nn.Module:
        """A trained model (one whose weights were just loaded from a checkpoint) as :meth:`train` returns it: in
        eval mode, with whatever else the task's strategies expect (detection: only the heads' final layers
        trainable)."""
        return model.eval()

    def cost(self, dataset: Dataset, ids: Sequence[int]) -> float:
        """The labeling cost of ``ids`` (default: one per item)."""
        return float(len(ids))

    def predicted_costs(self, model: nn.Module, dataset: Dataset, ids: Sequence[int]) -> np.ndarray:
        """The labeling cost each of ``ids`` is expected to have, from the model's own predictions (cost-aware
        strategies; the true cost is unknown before labeling). Default: one per item."""
        return np.ones(len(ids), dtype=np.float64)

    def check_inputs(self, model: nn.Module, dataset: Dataset, ids: Sequence[int]) -> None:
        """Run one small batch through ``model`` and raise a ConfigError/DataError naming what does not fit."""

    def influence_hooks(self) -> InfluenceHooks | None:
        """What this task offers the influence engine (None: the generic paths)."""
        return None

    # optional capabilities -----------------------------------------------------------------------------------
    def features(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        raise NotSupported(f"{type(self).__name__} offers no embeddings ({FEATURES})")

    def predict_proba(self, model: nn.Module, dataset: Dataset, ids: Sequence[int]) -> torch.Tensor:
        raise NotSupported(f"{type(self).__name__} offers no class probabilities ({PROBABILITIES})")

    def head(self, model: nn.Module) -> nn.Linear:
        raise NotSupported(f"{type(self).__name__} offers no classifier head ({CLASSIFIER_HEAD})")

    def features_and_logits(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotSupported(f"{type(self).__name__} offers no classifier head ({CLASSIFIER_HEAD})")


# ---------------------------------------------------------------------------------------------- selection
def _id_array(name: str, ids: Any) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{name} must be a 1-D sequence of integer ids, got {arr.dtype} of shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


@dataclass
class SelectionContext:
    """Everything a strategy may look at. Ids index ``pool``; the reference set is a held-out split.

    Checked at construction: ids are unique integers in ``0..len(pool)-1``, and no id is both labeled and
    unlabeled. ``influence`` is deprecated: pass ISAL's settings to the strategy (``make_strategy("isal",
    solver="cg")``); it is still used by a strategy built without settings.
    """

    model: nn.Module
    task: Task
    pool: Any
    labeled_ids: np.ndarray
    unlabeled_ids: np.ndarray
    reference: Any = None
    reference_ids: np.ndarray | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    influence: Any = None
    progress: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labeled_ids = _id_array("labeled_ids", self.labeled_ids)
        self.unlabeled_ids = _id_array("unlabeled_ids", self.unlabeled_ids)
        size = len(self.pool) if self.pool is not None else None
        for name, ids in (("labeled_ids", self.labeled_ids), ("unlabeled_ids", self.unlabeled_ids)):
            if len(np.unique(ids)) != len(ids):
                raise ConfigError(f"{name} lists an id twice")
            if len(ids) and (ids.min() < 0 or (size is not None and ids.max() >= size)):
                bad = ids[(ids < 0) | (ids >= (size if size is not None else np.iinfo(np.int64).max))]
                raise ConfigError(f"{name} holds ids outside the pool of {size} items (e.g. {int(bad[0])})")
        both = np.intersect1d(self.labeled_ids, self.unlabeled_ids)
        if len(both):
            raise ConfigError(f"{len(both)} id(s) are both labeled and unlabeled (e.g. {int(both[0])}); the "
                              "candidates must exclude the labeled set")
        if self.reference is not None and self.reference_ids is None:
            self.reference_ids = np.arange(len(self.reference))
        if self.reference_ids is not None:
            self.reference_ids = _id_array("reference_ids", self.reference_ids)
            if len(self.reference_ids) and self.reference is not None and (
                    self.reference_ids.min() < 0 or self.reference_ids.max() >= len(self.reference)):
                raise ConfigError(f"reference_ids hold ids outside the reference set of {len(self.reference)} items")


@dataclass
class Selection:
    """What a strategy returns.

    ``ids``: the chosen ids, in order of choice (the first is the one the strategy wants most).
    ``scores``: None, or one float per candidate, aligned with ``ctx.unlabeled_ids`` (lower = wanted more;
    NaN = not scored, e.g. outside learning loss's random subset). Strategies that build a batch by a greedy
    or sampled procedure (core-set, BADGE) give no scores: their order is in ``ids`` and their figures in ``info``.
    ``info``: JSON-able facts about the selection (recorded in the round's state).
    """

    ids: np.ndarray
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = dict(self.info)
        if self.scores is not None and len(self.scores):
            scored = np.asarray(self.scores, dtype=np.float64)
            scored = scored[~np.isnan(scored)]
            if len(scored):
                out.update(score_min=float(scored.min()), score_mean=float(scored.mean()),
                           score_max=float(scored.max()))
        return out


def check_budget(ctx: SelectionContext, budget: int) -> None:
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"budget must be an integer >= 1, got {budget!r}")
    if budget > len(ctx.unlabeled_ids):
        raise ConfigError(f"budget {budget} exceeds the {len(ctx.unlabeled_ids)} unlabeled items left in the pool")


def check_selection(selection: Selection, ctx: SelectionContext, budget: int, strategy: str = "strategy") -> None:
    """The contract of every selection: exactly ``budget`` unique ids from the candidates; scores aligned."""
    ids = np.asarray(selection.ids)
    if len(ids) != budget:
        raise ConfigError(f"{strategy} returned {len(ids)} ids for a budget of {budget}")
    if len(np.unique(ids)) != len(ids):
        raise ConfigError(f"{strategy} returned an id twice")
    if len(np.setdiff1d(ids, ctx.unlabeled_ids)):
        raise ConfigError(f"{strategy} returned ids that are not unlabeled candidates")
    if selection.scores is not None and np.shape(selection.scores) != (len(ctx.unlabeled_ids),):
        raise ConfigError(f"{strategy} returned {np.shape(selection.scores)} scores for "
                          f"{len(ctx.unlabeled_ids)} candidates")


def take_lowest(ids: np.ndarray, scores: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` ids with the lowest scores; ties broken by id so the choice is deterministic (NaN last)."""
    scores = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(scores), np.inf, scores)
    order = np.lexsort((ids, np.isnan(scores), keyed))
    return np.asarray(ids)[order[:budget]]


class Strategy(ABC):
    """Base of every strategy. The constructor only stores (and validates) parameters, as scikit-activeml's;
    :meth:`settings` returns them as JSON for config.json.

    ``requires`` lists the task capabilities the strategy needs (checked before a run starts). ``state`` says
    what the object keeps between calls ("none": stateless between rounds).
    """

    name: ClassVar[str] = "strategy"
    requires: ClassVar[frozenset[str]] = frozenset()
    state: ClassVar[str] = "none"
    uses_model: ClassVar[bool] = True   # False: selects without looking at the model (random)
    cold_start: ClassVar[bool] = False  # True: meaningful with no labels yet, on an untrained model (random, core-set)
    shards: ClassVar[bool] = False      # True: splits its per-item work between torch.distributed ranks; False:
                                        # every rank computes the whole selection (the same, without the speed-up)

    @abstractmethod
    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        """Choose ``budget`` ids among ``ctx.unlabeled_ids``."""

    def settings(self) -> dict[str, Any]:
        """The constructor's parameters as plain JSON values (what ``make_strategy(name, **settings)`` rebuilds)."""
        out = {}
        for pname, param in inspect.signature(type(self).__init__).parameters.items():
            if pname == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            value = getattr(self, pname, param.default)
            out[pname] = list(value) if isinstance(value, tuple) else value
        return out

    def check(self, task: Task, model: nn.Module) -> None:
        """Raise before a run starts (not mid-round) when this strategy cannot work with ``task`` and ``model``
        (a freshly built one). Default: the task offers every capability in ``requires``."""
        self.check_task(task)

    def prepare_training(self, model: nn.Module, task: Task, dataset: Dataset, labeled_ids: np.ndarray,
                         train_cfg: Any) -> tuple[nn.Module, Callable] | None:
        """A strategy that trains with the model (learning loss) returns (module to train, loss_fn for
        ``task.train``); the default trains the plain model (None)."""
        return None

    def check_task(self, task: Task | type) -> None:
        """Raise NotSupported, at start and not mid-round, when ``task`` (an object or its class) lacks what this
        strategy needs."""
        missing = sorted(self.requires - set(task.capabilities) - {REFERENCE_SET})
        if missing:
            name = task.__name__ if isinstance(task, type) else type(task).__name__
            raise NotSupported(f"strategy {self.name!r} needs {', '.join(missing)}, which the {name} does not offer")


class TaskPlugin(ABC):
    """What a task's folder registers in :data:`influal.tasks.TASKS`: everything the loop, the CLI and the report
    need, so that none of them names a task.

    ``config`` arguments are the experiment's :class:`~influal.loop.config.ExperimentConfig` (read-only): its
    ``dataset``, ``data_root``, ``val_size``, ``test_size``, ``model``, ``eval_batch_size`` and ``task_settings``
    (an instance of ``settings_class``).
    """

    name: ClassVar[str]
    settings_class: ClassVar[type]
    metric: ClassVar[str]
    cost_unit: ClassVar[str] = "labels"     # what ``cost`` counts, in reports
    metric_scale: ClassVar[float] = 100.0   # reports show the metric times this (100: in %)
    default_dataset: ClassVar[str]
    default_model: ClassVar[str]
    default_train_preset: ClassVar[str] = "demo"
    task_class: ClassVar[type | None] = None  # lets the loop check strategies' capabilities before loading data

    @abstractmethod
    def datasets(self):
        """The registry of data-set formats: name -> loader(config) -> DatasetSplits."""

    @abstractmethod
    def models(self):
        """The registry of models: name -> builder(config, splits) -> nn.Module (freshly initialised)."""

    def check(self, config: Any) -> None:
        """Everything about ``config`` that can be checked before loading data (names, combinations, files)."""
        self.datasets().resolve(config.dataset)
        self.models().resolve(config.model)

    def load_data(self, config: Any) -> DatasetSplits:
        return self.datasets().build(config.dataset, config)

    def model_factory(self, config: Any, splits: DatasetSplits) -> Callable[[], nn.Module]:
        builder = self.models().get(config.model)
        return lambda: builder(config, splits)

    @abstractmethod
    def build_task(self, config: Any, splits: DatasetSplits, device: torch.device) -> Task:
        """The task object of an experiment."""

    def check_splits(self, splits: DatasetSplits) -> list[str]:
        """Warnings about the data that do not stop a run (overlap of pool and test, a reference set that misses a
        class, ...); errors are raised by the data-set loaders and ``Task.check_inputs``."""
        return []

    def report_sections(self, rows: list[dict], metric: str, baseline: str) -> str:
        """Extra markdown for report.md (default none)."""
        return ""

    def labeling(self) -> "LabelSchema | None":
        """How this task's labels look to people and labeling tools (the labeling workflow), or None if the task
        cannot be labeled through influal's projects."""
        return None


# ---------------------------------------------------------------------------------------------- labeling
@dataclass(frozen=True)
class ImageRecord:
    """One image of a labeling project: its stable ``id``, its ``path`` relative to the project's image folder,
    its pixel size, its file size in bytes and a hash of its content."""

    id: int
    path: str
    width: int
    height: int
    size: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "width": self.width, "height": self.height, "size": self.size,
                "hash": self.hash}


@dataclass(frozen=True)
class ImageCollection:
    """What a task needs to turn a project's images into a data set: the image folder, every image (``records[i].id
    == i``) and the task's image settings recorded at ``influal init`` (:meth:`LabelSchema.image_settings`)."""

    root: Any
    records: Sequence[ImageRecord]
    settings: dict[str, Any]


Answer = dict  # the JSON form of one image's label (see LabelSchema)


class LabelSchema(ABC):
    """How a task's labels look to people and to labeling tools: what the labeling workflow (``influal init / query /
    import``) asks a task, so that the workflow itself knows no task.

    An *answer* is the JSON form of one image's label as a project stores it (classification: ``{"label": "cat"}``;
    detection: ``{"boxes": [{"label": "cat", "bbox": [x, y, w, h]}]}`` in pixels). A *prediction* is the model's
    guess in the same form plus a ``confidence``. The parsers get one image's entries of a file (Label Studio
    results, CSV rows, COCO annotations) and return ``(answer or None, problems)``: each problem one line, without
    the file's name (the caller adds where it is). ``empty_answer`` is what an annotation with nothing in it means
    for the task (None: it is a mistake; detection: an image that holds no object).
    """

    tool_kind: ClassVar[str]                # the Label Studio control: "choices", "rectanglelabels"
    empty_answer: ClassVar[Answer | None] = None

    @abstractmethod
    def image_settings(self, root: Any, records: Sequence[ImageRecord]) -> dict[str, Any]:
        """The task's input settings measured on the images at ``init`` (size, channels, normalisation)."""

    @abstractmethod
    def dataset(self, images: ImageCollection, answers: dict[int, Answer], classes: Sequence[str]) -> Dataset:
        """A data set of every image (index = id), streamed from disk, with the labels of ``answers``."""

    @abstractmethod
    def input_shape(self, images: ImageCollection, classes: Sequence[str]) -> tuple[int, int, int]:
        """What a model builder reads of the data: ``(num_classes, in_channels, image_size)``."""

    @abstractmethod
    def predict(self, task: Task, model: nn.Module, dataset: Dataset, ids: Sequence[int],
                classes: Sequence[str]) -> list[dict[str, Any]]:
        """The model's prediction for each id, in order (JSON: an answer's fields plus ``confidence``)."""

    @abstractmethod
    def check_answer(self, answer: Answer, record: ImageRecord, classes: Sequence[str]) -> list[str]:
        """Problems with an answer for ``record`` (unknown class, a box outside the image or of zero area)."""

    @abstractmethod
    def cost(self, answer: Answer) -> float:
        """What labeling this answer cost (labels, boxes)."""

    @abstractmethod
    def class_counts(self, answer: Answer) -> dict[str, int]:
        """How many times each class occurs in an answer."""

    @abstractmethod
    def label_config(self, classes: Sequence[str]) -> str:
        """The Label Studio labeling config (XML) for this task's answers; controls named ``label`` on ``image``."""

    @abstractmethod
    def to_label_studio(self, prediction: dict[str, Any], record: ImageRecord) -> list[dict[str, Any]]:
        """A prediction as Label Studio result items (pre-annotations)."""

    @abstractmethod
    def from_label_studio(self, result: list[dict[str, Any]], record: ImageRecord,
                          classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        """One Label Studio annotation's ``result`` as an answer."""

    def from_csv(self, rows: list[dict[str, str]], record: ImageRecord,
                 classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        """An image's CSV rows (``path,label`` and what else the task reads) as an answer."""
        return None, [f"{type(self).__name__} reads no CSV labels"]

    def from_coco(self, annotations: list[dict[str, Any]], categories: dict[int, str], record: ImageRecord,
                  classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        """An image's COCO annotations (``categories``: id -> name) as an answer."""
        return None, [f"{type(self).__name__} reads no COCO annotations"]

    def to_coco(self, prediction: dict[str, Any], record: ImageRecord, classes: Sequence[str]) -> list[dict[str, Any]]:
        """A prediction as COCO annotation entries (category ids 1..K in the order of ``classes``); none by default."""
        return []

    def describe(self, prediction: dict[str, Any]) -> str:
        """A short text of a prediction (contact sheets, batch.csv)."""
        return ""

    def csv_columns(self, prediction: dict[str, Any]) -> dict[str, str]:
        """The prediction's columns of batch.csv (after id, path, rank, score, split)."""
        return {}

    def drawn_boxes(self, prediction: dict[str, Any]) -> list[tuple[list[float], str]]:
        """Boxes ``([x, y, w, h], caption)`` to draw on a contact sheet's thumbnail (none by default)."""
        return []
