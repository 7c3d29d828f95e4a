"""Learning loss for active learning (Yoo & Kweon, CVPR 2019), as used in the ISAL paper's comparison.

A small loss-prediction module is trained together with the classifier. It reads the output of each block of
the backbone ("taps"), global-average-pools every map, passes it through FC(width) + ReLU, concatenates the
branches and predicts the per-sample target loss with one more FC. It is trained with the pairwise margin
ranking loss (the batch is split into pairs (i, n-1-i); margin ξ = 1), added to the mean cross-entropy with
weight λ = 1. From epoch ``round(stop_fraction · epochs)`` on (120 of 200 in the paper, i.e. after 60 % of
the epochs) the features are detached before they enter the module, so its gradient no longer reaches the
backbone. Selection scores a random subset of at most ``subset`` unlabeled items (10,000 in the paper) and
takes those with the largest predicted loss (score = -predicted loss, lowest first).

Taps are found by :func:`discover_taps`; a tap is a module name whose *output* is read, or ``"name@input"``
to read a module's input instead.

The loop trains through :meth:`LearningLossStrategy.prepare_training`, which returns the model to train (the
backbone wrapped with the module, so one optimiser updates both) and the ``loss_fn`` for ``task.train``; the
trained module is kept for the following ``select``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..api import CLASSIFIER_HEAD, LOSS_HOOK, Selection, SelectionContext, Strategy, check_budget, take_lowest
from ..core.errors import ConfigError
from ..core.torch_utils import eval_mode
from .kernels import LossPredictionModule, margin_ranking_loss
from .sharding import per_item

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def discover_taps(model: nn.Module, head: nn.Module | None = None) -> list[str]:
    """The modules whose outputs feed the loss-prediction module, found generically, first rule that applies:

    1. ``model.loss_taps``, if the model declares such a list of module names;
    2. the top-level ``layer1``, ``layer2``, ... (ResNet convention, torchvision's and ours);
    3. the outermost blocks held in an ``nn.Sequential`` that are themselves containers with a convolution
       (e.g. the small CNN's ``features.0`` and ``features.1``);
    4. otherwise the penultimate features: ``"<head>@input"`` (``head``: the task's classifier head module).
    """
    modules = dict(model.named_modules())
    declared = getattr(model, "loss_taps", None)
    if declared:
        return validate_taps(model, list(declared))
    layers = sorted((n for n in modules if re.fullmatch(r"layer\d+", n)), key=lambda n: int(n[5:]))
    if layers:
        return layers
    taps: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if any(full.startswith(t + ".") for t in taps):
                continue
            has_children = any(True for _ in child.children())
            if has_children and any(isinstance(m, CONV_TYPES) for m in child.modules()):
                taps.append(full)
    if taps:
        return taps
    name = next((n for n, m in model.named_modules() if m is head), None) if head is not None else None
    if name is None:
        raise ConfigError(f"learning loss found no feature maps to tap in {type(model).__name__}; declare "
                          "model.loss_taps (module names) or pass taps=")
    return [f"{name}@input"]


def validate_taps(model: nn.Module, taps: Sequence[str]) -> list[str]:
    modules = dict(model.named_modules())
    for tap in taps:
        name = tap[:-len("@input")] if tap.endswith("@input") else tap
        if name not in modules:
            raise ConfigError(f"learning-loss tap {tap!r} is not a module of {type(model).__name__}; name modules "
                              "as in model.named_modules() (append '@input' to read a module's input)")
    if not taps:
        raise ConfigError("learning loss needs at least one feature tap")
    return list(taps)


@contextmanager
def capture(model: nn.Module, taps: Sequence[str]) -> Iterator[list[torch.Tensor | None]]:
    """Within the block every forward of ``model`` stores the tapped tensors (the last call's) in the list."""
    modules = dict(model.named_modules())
    store: list[torch.Tensor | None] = [None] * len(taps)
    handles = []
    for i, tap in enumerate(taps):
        if tap.endswith("@input"):
            def pre(_m, inputs, i=i):
                store[i] = inputs[0]
            handles.append(modules[tap[:-len("@input")]].register_forward_pre_hook(pre))
        else:
            def post(_m, _inputs, output, i=i):
                store[i] = output
            handles.append(modules[tap].register_forward_hook(post))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


class LossLearner(nn.Module):
    """The backbone and its loss-prediction module as one module, so one optimiser trains both.

    ``forward`` is the backbone's; :meth:`loss` is the training objective for ``task.train(loss_fn=...)``.
    """

    def __init__(self, model: nn.Module, module: LossPredictionModule, taps: Sequence[str], task, *,
                 stop_epoch: int, weight: float = 1.0, margin: float = 1.0):
        super().__init__()
        self.model = model
        self.module = module
        self.taps = list(taps)
        self.task = task
        self.stop_epoch = stop_epoch
        self.weight = weight
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def gradient_stopped(self, epoch: int) -> bool:
        return epoch >= self.stop_epoch

    def loss(self, _model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        with capture(self.model, self.taps) as feats:
            target = self.task.loss(self.model, x, y)
        if self.gradient_stopped(epoch):
            feats = [f.detach() for f in feats]
        predicted = self.module(feats)
        return target.mean() + self.weight * margin_ranking_loss(predicted, target, self.margin)

    @torch.no_grad()
    def predict_loss(self, x: torch.Tensor) -> torch.Tensor:
        with capture(self.model, self.taps) as feats:
            self.model(x)
        return self.module(feats)


class LearningLossStrategy(Strategy):
    """Largest predicted loss first, among a random subset of at most ``subset`` unlabeled items.

    State: :meth:`prepare_training` attaches a fresh module each round and keeps it for that round's ``select``
    (nothing else carries over between rounds). Candidates outside the subset get a NaN score.
    """

    name = "learning_loss"
    requires = frozenset({LOSS_HOOK})
    state = "the loss-prediction module trained with this round's model (replaced every round)"
    shards = True

    def __init__(self, subset: int = 10_000, stop_fraction: float = 0.6, weight: float = 1.0, margin: float = 1.0,
                 width: int = 128, taps: Sequence[str] | None = None, batch_size: int | None = None):
        if not isinstance(subset, int) or subset < 1:
            raise ConfigError(f"learning loss subset must be an integer >= 1, got {subset!r}")
        if not 0.0 <= stop_fraction <= 1.0:
            raise ConfigError(f"learning loss stop_fraction must lie in [0, 1], got {stop_fraction!r}")
        self.subset, self.stop_fraction, self.weight, self.margin = subset, stop_fraction, weight, margin
        self.width, self.taps, self.batch_size = width, taps, batch_size
        self.learner: LossLearner | None = None

    def stop_epoch(self, epochs: int) -> int:
        """First epoch (0-based) whose features are detached: 120 for 200 epochs."""
        return int(round(self.stop_fraction * epochs))

    def prepare_training(self, model: nn.Module, task, dataset, labeled_ids, train_cfg) -> tuple[nn.Module, object]:
        """Attach a fresh loss-prediction module to ``model``; return (module to train, loss_fn for task.train).

        The tap sizes are read from one no-grad, eval-mode forward of two labeled items (no state changes, no
        random numbers drawn); the module's initial weights come from torch's global generator, which the loop
        seeds per round.
        """
        head = task.head(model) if CLASSIFIER_HEAD in task.capabilities else None
        taps = validate_taps(model, self.taps) if self.taps is not None else discover_taps(model, head)
        ids = np.asarray(labeled_ids, dtype=np.int64)[:2]
        if len(ids) == 0:
            raise ConfigError("learning loss needs a non-empty labeled set to train its module")
        with eval_mode(model), torch.no_grad(), capture(model, taps) as feats:
            for _, x, _ in task.batches(dataset, ids, len(ids)):
                model(x)
        channels = [int(f.shape[1]) for f in feats]
        device = next(model.parameters()).device
        module = LossPredictionModule(channels, self.width).to(device)
        self.learner = LossLearner(model, module, taps, task, stop_epoch=self.stop_epoch(train_cfg.epochs),
                                   weight=self.weight, margin=self.margin)
        return self.learner, self.learner.loss

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        learner = self.learner
        if learner is None or learner.model is not ctx.model:
            raise ConfigError("learning_loss selects with a loss-prediction module trained alongside the model; "
                              "train through the loop (or call prepare_training before training)")
        unlabeled = ctx.unlabeled_ids
        size = min(len(unlabeled), max(self.subset, int(budget)))
        if size < len(unlabeled):
            positions = np.sort(torch.randperm(len(unlabeled), generator=ctx.generator)[:size].numpy())
        else:
            positions = np.arange(len(unlabeled))
        candidates = unlabeled[positions]
        batch_size = self.batch_size or ctx.task.eval_batch_size
        def predict(ids):
            with eval_mode(learner):
                return torch.cat([learner.predict_loss(x).double().cpu()
                                  for _, x, _ in ctx.task.batches(ctx.pool, ids, batch_size)])
        scores = -per_item(candidates, predict).numpy()
        aligned = np.full(len(unlabeled), np.nan)
        aligned[positions] = scores
        info = {"candidates": int(size), "taps": ",".join(learner.taps)}
        return Selection(take_lowest(candidates, scores, budget), aligned, info)

