"""BALD (Houlsby et al. 2011) with Monte-Carlo dropout (Gal et al. 2017).

The mutual information between the prediction and the weights is estimated from T stochastic passes:

    BALD(x) = H[ mean_t p_t(x) ] - mean_t H[ p_t(x) ]

and the items with the largest BALD value are selected (score = -BALD, lowest first).

Where the dropout comes from:

- If the model has dropout layers (``nn.Dropout``, ``nn.Dropout1d/2d/3d``), those layers are
  made stochastic while everything else (BatchNorm in particular) stays in eval mode, and the model is run
  T times per batch.
- If it has none (the package's small CNN and ResNet-18 have none), dropout with probability ``p`` is applied
  to the penultimate features, i.e. to the input of the task's classifier head (``task.head``): the features
  are computed once and only the head is run T times. Note that such a model was not trained with dropout, so this is
  MC dropout at test time only: a cheap approximation of a posterior over the last layer.

Every mask is drawn from the selection generator (on CPU), so the selection is deterministic under a seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..api import CLASSIFIER_HEAD, Selection, SelectionContext, Strategy, check_budget, take_lowest
from ..core.errors import ConfigError
from ..core.torch_utils import eval_mode
from .uncertainty import neg_entropy

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def bald_from_samples(probs: torch.Tensor) -> torch.Tensor:
    """BALD per item from MC probabilities of shape [T, n, C] (nats, >= 0 up to rounding)."""
    mean = probs.mean(dim=0)
    expected_entropy = -torch.stack([neg_entropy(p) for p in probs]).mean(dim=0)
    return -neg_entropy(mean) - expected_entropy


def _bernoulli_mask(shape, keep: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) < keep).to(device=device, dtype=torch.float32) / keep


class _SeededDropout:
    """Forward hooks that turn eval-mode dropout layers into MC dropout with masks from one generator."""

    def __init__(self, model: nn.Module, generator: torch.Generator):
        self.layers = [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]
        self.generator = generator
        self.handles = []

    def hook(self, module: nn.Module, inputs, output):
        x = inputs[0]
        p = float(module.p)
        if p <= 0:
            return output
        if p >= 1:
            return torch.zeros_like(x)
        if isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):  # whole channels
            shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
        else:
            shape = tuple(x.shape)
        return x * _bernoulli_mask(shape, 1 - p, self.generator, x.device).to(x.dtype)

    def __enter__(self):
        self.handles = [m.register_forward_hook(self.hook) for m in self.layers]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


class BALDStrategy(Strategy):
    """MC-dropout BALD with ``samples`` stochastic passes; ``p`` is used only for models without dropout layers."""

    name = "bald"
    requires = frozenset({CLASSIFIER_HEAD})

    def __init__(self, samples: int = 20, p: float = 0.5, batch_size: int | None = None):
        if not isinstance(samples, int) or samples < 2:
            raise ConfigError(f"BALD needs an integer number of MC samples >= 2, got {samples!r}")
        if not 0.0 < p < 1.0:
            raise ConfigError(f"BALD's dropout probability must lie in (0, 1), got {p!r}")
        self.samples = samples
        self.p = p
        self.batch_size = batch_size

    @torch.no_grad()
    def mc_probs(self, model: nn.Module, x: torch.Tensor, generator: torch.Generator, task) -> torch.Tensor:
        """[T, n, C] softmax probabilities of T dropout passes over one batch (model in eval mode)."""
        if any(isinstance(m, DROPOUT_TYPES) for m in model.modules()):
            with _SeededDropout(model, generator):
                return torch.stack([F.softmax(model(x), dim=1) for _ in range(self.samples)])
        linear = task.head(model)
        feats, _ = task.features_and_logits(model, x)
        keep = 1.0 - self.p
        return torch.stack([F.softmax(linear(feats * _bernoulli_mask(feats.shape, keep, generator, feats.device)),
                                      dim=1) for _ in range(self.samples)])

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        model, task = ctx.model, ctx.task
        batch_size = self.batch_size or task.eval_batch_size
        values = []
        with eval_mode(model):
            for _, x, _ in task.batches(ctx.pool, ctx.unlabeled_ids, batch_size):
                values.append(bald_from_samples(self.mc_probs(model, x, ctx.generator, task).double()).cpu())
        bald = torch.cat(values).numpy()
        scores = -bald
        info = {"mc_samples": self.samples,
                "dropout": "model" if any(isinstance(m, DROPOUT_TYPES) for m in model.modules())
                else f"penultimate p={self.p}"}
        return Selection(take_lowest(ctx.unlabeled_ids, scores, budget), scores.astype(np.float64), info)
