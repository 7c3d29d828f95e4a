"""ISAL with a diverse batch: the most influential candidates first, then a spread-out batch among them.

ISAL's ``B`` best individual influences are near-duplicates (measured on mnist5k-bench: class-imbalanced batches,
below random at the first acquisition). Here influence decides *which* items are worth labeling (the
``shortlist x B`` candidates of lowest score I(z), every ISAL setting and preset applies), and diversity decides
*which of them together*:

- ``kcenter``: k-center greedy (core-set) from the labeled set on ``task.features`` (any task with features:
  classification and detection);
- ``kmeans++``: BADGE's k-means++ seeding on the last-layer gradient embeddings (a classifier's head);
- ``auto`` (the default): ``kmeans++`` where the task has a classifier head, else ``kcenter``.

Defaults are the variant that measured best on mnist5k-bench (docs/benchmarks.md, "Influence variants"): the
paper's influence settings (``preset="paper"`` unless a ``config`` or another ``preset`` is given; explicit ISAL
settings apply on top), a shortlist of 3 x budget, k-means++. ``score="label_variance"`` replaces the argmax
influence by its variance over the predicted labels (last layer only). ``per_cost=True`` ranks by predicted
benefit per predicted labeling cost (``task.predicted_costs``: a detector's confident detections; one per item
for classification): a negative (wanted) score is divided by the cost, a positive one multiplied. ``shortlist =
1`` is plain ISAL. ``scores`` are ISAL's, so the round records the same score summary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..api import CLASSIFIER_HEAD, FEATURES, NotSupported, Selection, SelectionContext, check_budget, take_lowest
from ..core.errors import ConfigError
from ..core.torch_utils import eval_mode
from ..influence.engine import InfluenceEngine
from .badge import gradient_factors
from .coreset import collect_features
from .isal import ISALStrategy
from .kernels import k_center_greedy, kmeans_pp_factored
from .sharding import per_item

DIVERSITY = ("auto", "kcenter", "kmeans++")
SCORES = ("argmax", "label_variance")


def label_variance(model, task, dataset, ids: np.ndarray, scope, s: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Var_{y~p}(g_y·s) per item on a classifier's last layer: how much the predicted change of the reference loss
    depends on which label the item turns out to have. With q = S_W f + s_b (s as the layer's shape), g_y·s =
    p·q - q_y, whose mean over y ~ p is 0, so the variance is Σ_y p_y (q_y - p·q)²."""
    head = task.head(model)
    parts = dict(zip((id(p) for p in scope.params), scope.unflatten(s)))
    out = []
    with eval_mode(model), torch.no_grad():
        for _, x, _ in task.batches(dataset, ids, batch_size):
            feats, logits = task.features_and_logits(model, x)
            q = feats @ parts[id(head.weight)].T
            if head.bias is not None and id(head.bias) in parts:
                q = q + parts[id(head.bias)]
            p = torch.softmax(logits.double(), dim=1)
            q = q.double()
            out.append((p * (q - (p * q).sum(1, keepdim=True)) ** 2).sum(1).cpu())
    return torch.cat(out)


class DiverseISALStrategy(ISALStrategy):
    """Influence shortlist, diverse batch (module docstring). Takes every ISAL setting (``scope``, ``solver``,
    ``preset`` ...) plus ``shortlist`` (candidates kept = ceil(shortlist x budget), >= 1) and ``diversity``."""

    name = "isal_diverse"

    def __init__(self, config=None, *, preset: str | None = None, shortlist: float = 3.0,
                 diversity: str = "auto", score: str = "argmax", per_cost: bool = False, **settings: Any):
        if config is None and preset is None:
            preset = "paper"  # measured the better shortlist on mnist5k-bench (docs/benchmarks.md, issue 13)
        super().__init__(config, preset=preset, **settings)
        if isinstance(shortlist, bool) or not isinstance(shortlist, (int, float)) or not shortlist >= 1:
            raise ConfigError(f"isal_diverse's shortlist must be a number >= 1, got {shortlist!r}")
        if diversity not in DIVERSITY:
            raise ConfigError(f"isal_diverse's diversity must be one of {', '.join(DIVERSITY)}, got {diversity!r}")
        if score not in SCORES:
            raise ConfigError(f"isal_diverse's score must be one of {', '.join(SCORES)}, got {score!r}")
        if not isinstance(per_cost, bool):
            raise ConfigError(f"isal_diverse's per_cost must be true or false, got {per_cost!r}")
        self.shortlist, self.diversity, self.score, self.per_cost = float(shortlist), diversity, score, per_cost

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "shortlist": self.shortlist, "diversity": self.diversity, "score": self.score,
                "per_cost": self.per_cost}

    def _diversity(self, task) -> str:
        """``auto``: BADGE's k-means++ where the task has a classifier head, else k-center on its features."""
        if self.diversity != "auto":
            return self.diversity
        return "kmeans++" if CLASSIFIER_HEAD in task.capabilities else "kcenter"

    def check(self, task, model) -> None:
        super().check(task, model)
        need = FEATURES if self._diversity(task) == "kcenter" else CLASSIFIER_HEAD
        if need not in task.capabilities:
            raise NotSupported(f"strategy '{self.name}' needs the task capability {need!r} for diversity "
                               f"{self.diversity!r}; {type(task).__name__} lacks it")
        if self.score == "label_variance":
            if CLASSIFIER_HEAD not in task.capabilities:
                raise NotSupported(f"strategy '{self.name}' needs the task capability {CLASSIFIER_HEAD!r} for score "
                                   f"'label_variance'; {type(task).__name__} lacks it")
            scope = InfluenceEngine(model, task, self.config).scope
            if {id(p) for p in scope.params} != {id(p) for p in task.head(model).parameters()}:
                raise ConfigError("isal_diverse's score 'label_variance' is computed on the final linear layer: "
                                  "use scope 'last'")

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        result = self.influence(ctx)
        batch_size = ctx.task.eval_batch_size
        scores = result.scores
        if self.score == "label_variance":
            engine = InfluenceEngine(ctx.model, ctx.task, self.resolve(ctx))
            scores = -per_item(result.ids, lambda ids: label_variance(
                ctx.model, ctx.task, ctx.pool, ids, engine.scope, result.solve.s, batch_size)).numpy()
        if self.per_cost:  # predicted benefit per unit of predicted cost (a detector's boxes)
            costs = per_item(result.ids, lambda ids: torch.as_tensor(
                ctx.task.predicted_costs(ctx.model, ctx.pool, ids))).numpy().astype(np.float64)
            scores = np.where(scores < 0, scores / costs, scores * costs)
        keep = min(len(result.ids), max(int(budget), math.ceil(self.shortlist * budget)))
        short = take_lowest(result.ids, scores, keep)
        diversity = self._diversity(ctx.task)
        if diversity == "kcenter":
            feats = per_item(short, lambda ids: collect_features(ctx.model, ctx.task, ctx.pool, ids, batch_size))
            labeled = per_item(ctx.labeled_ids, lambda ids: collect_features(ctx.model, ctx.task, ctx.pool, ids,
                                                                             batch_size))
            picked, _ = k_center_greedy(feats, labeled, int(budget), generator=ctx.generator)
        else:
            a, f = per_item(short, lambda ids: gradient_factors(ctx.model, ctx.task, ctx.pool, ids, batch_size))
            picked = kmeans_pp_factored(a, f, int(budget), ctx.generator)
        info = self.summary(result)
        info.update(shortlist=int(keep), diversity=diversity, score=self.score, per_cost=self.per_cost)
        return Selection(np.asarray(short)[picked], scores, info)
