"""Image classification: a loss on the logits (cross-entropy, optionally label-smoothed), argmax pseudo-labels,
accuracy, cost = number of labels.

To change the loss, subclass and override :meth:`ClassificationTask.logit_loss` (per-sample losses from logits
and labels): the influence hooks then differentiate *that* loss (by autograd on the logits) and stay exact. A
subclass that overrides :meth:`loss` itself gets no hooks, and the engine takes its generic paths.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ...api import CLASSIFIER_HEAD, FEATURES, LOSS_HOOK, PROBABILITIES, InfluenceHooks, Task
from ...core.batching import iterate_batches
from ...core.errors import ConfigError, DataError
from ...core.torch_utils import eval_mode
from ...settings import check_positive
from ...training import augment, train_sgd
from .heads import forward_with_features, last_linear


class ClassificationTask(Task):
    metric_name = "accuracy"
    capabilities = frozenset({FEATURES, PROBABILITIES, CLASSIFIER_HEAD, LOSS_HOOK})
    convex_logit_loss = False  # a subclass whose logit_loss is convex in the logits may say so (auto -> CG)

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", eval_batch_size: int = 512,
                 label_smoothing: float = 0.0):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, got {num_classes!r}")
        check_positive("label_smoothing", label_smoothing, allow_zero=True)
        if label_smoothing >= 1.0:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size
        self.label_smoothing = float(label_smoothing)

    # ------------------------------------------------------------------ data and loss
    def batches(self, dataset: Dataset, ids: Sequence[int], batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch_ids, x, y in iterate_batches(dataset, ids, batch_size, shuffle=shuffle, generator=generator,
                                               drop_last=drop_last):
            yield batch_ids, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def logit_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample loss from logits [n, C] and labels [n]: cross-entropy with ``label_smoothing``."""
        if self.label_smoothing:
            return F.cross_entropy(logits, targets, reduction="none", label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits, targets, reduction="none")

    def loss(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.logit_loss(model(inputs), targets)

    @torch.no_grad()
    def pseudo_targets(self, model, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs).argmax(dim=1)

    def influence_hooks(self) -> InfluenceHooks | None:
        from .influence import ClassificationInfluence

        if type(self).loss is not ClassificationTask.loss:  # a loss the hooks do not know: generic paths
            return None
        return ClassificationInfluence(self)

    # ------------------------------------------------------------------ capabilities
    @torch.no_grad()
    def features(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return forward_with_features(model, inputs)[0]

    def features_and_logits(self, model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_features(model, inputs)

    def head(self, model: torch.nn.Module) -> torch.nn.Linear:
        return last_linear(model)[1]

    @torch.no_grad()
    def predict_proba(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int]) -> torch.Tensor:
        """Softmax probabilities [len(ids), C] in eval mode."""
        with eval_mode(model):
            out = [F.softmax(model(x), dim=1).cpu() for _, x, _ in self.batches(dataset, ids, self.eval_batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)

    # ------------------------------------------------------------------ metrics, cost, training
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int] | None = None) -> dict[str, float]:
        """Accuracy and the mean (unsmoothed) cross-entropy."""
        ids = np.arange(len(dataset)) if ids is None else ids
        if len(ids) == 0:
            raise DataError("cannot evaluate on an empty data set")
        correct, total, loss_sum = 0, 0, 0.0
        with eval_mode(model):
            for _, x, y in self.batches(dataset, ids, self.eval_batch_size):
                logits = model(x)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                total += len(y)
        return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}

    def check_inputs(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int]) -> None:
        """One batch of up to two items through the model: its output must be [n, num_classes] logits."""
        ids = np.asarray(ids, dtype=np.int64)[:2]
        if len(ids) == 0:
            return
        _, x, y = next(self.batches(dataset, ids, len(ids)))
        try:
            with eval_mode(model), torch.no_grad():
                out = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"the model cannot process inputs of shape {tuple(x.shape[1:])} ({first}); check the "
                            "image size and channels against the model") from None
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise DataError(f"the model outputs shape {tuple(out.shape)} for {len(ids)} inputs; a classifier of "
                            f"{self.num_classes} classes must output [n, {self.num_classes}] logits")
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise DataError(f"labels must lie in 0..{self.num_classes - 1}; found {int(y.min())}..{int(y.max())}")

    def train(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int], cfg, generator: torch.Generator,
              *, progress: bool = False, loss_fn=None) -> torch.nn.Module:
        """Train from scratch with the SGD recipe ``cfg`` (a :class:`~influal.settings.TrainConfig`); ``loss_fn``
        (learning loss) replaces the mean loss. Batches of one are skipped (BatchNorm)."""
        def objective(m, x, y, epoch):
            return self.loss(m, x, y).mean() if loss_fn is None else loss_fn(m, x, y, epoch)

        def prepare(x, gen):
            return augment(x, cfg.augment, gen)

        # a strategy's objective (learning loss pairs a batch's items) is not a mean of per-item terms: under
        # torch.distributed every rank then trains on whole batches (see train_sgd)
        return train_sgd(model, self, dataset, ids, cfg, generator, objective=objective, prepare=prepare, min_batch=2,
                         progress=progress, data_parallel=loss_fn is None)
