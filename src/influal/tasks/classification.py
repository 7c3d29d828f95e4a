"""Image classification: cross-entropy, argmax pseudo-labels, accuracy, cost = number of labels."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data.base import iterate_batches
from ..models.introspect import forward_with_features


class ClassificationTask:
    metric_name = "accuracy"
    fuses_pseudo_targets = True  # per_sample_dot(targets=None) takes the argmax from its own forward pass
    prefers_channels_last = True  # influence passes on the CPU run channels-last (influence/layout.py, measured)

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", eval_batch_size: int = 512):
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size

    def batches(self, dataset: Dataset, ids: Sequence[int], batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch_ids, x, y in iterate_batches(dataset, ids, batch_size, shuffle=shuffle, generator=generator,
                                               drop_last=drop_last):
            yield batch_ids, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def loss(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs), targets, reduction="none")

    @torch.no_grad()
    def pseudo_targets(self, model, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs).argmax(dim=1)

    def per_sample_dot(self, model, inputs: torch.Tensor, targets, scope, s: torch.Tensor, method: str):
        """Fused fast paths for cross-entropy: the closed form (scope 'last'), the per-layer contraction and a
        JVP of the logits, each taking the argmax pseudo-label from its own forward pass when ``targets`` is None."""
        from ..influence.grads import gs_closed_last, gs_jvp_logits, gs_layerwise

        if method == "closed":
            with torch.no_grad():
                return gs_closed_last(model, inputs, targets, scope, s)
        if method == "jvp":
            return gs_jvp_logits(model, inputs, targets, scope, s)
        if method == "layerwise":
            return gs_layerwise(model, self, inputs, targets, scope, s)
        return None

    @torch.no_grad()
    def features(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return forward_with_features(model, inputs)[0]

    @torch.no_grad()
    def predict_proba(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int]) -> torch.Tensor:
        """Softmax probabilities [len(ids), C] in eval mode."""
        was_training = model.training
        model.eval()
        out = [F.softmax(model(x), dim=1).cpu() for _, x, _ in self.batches(dataset, ids, self.eval_batch_size)]
        model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int] | None = None) -> dict[str, float]:
        ids = np.arange(len(dataset)) if ids is None else ids
        was_training = model.training
        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        for _, x, y in self.batches(dataset, ids, self.eval_batch_size):
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
        model.train(was_training)
        return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}

    def cost(self, dataset: Dataset, ids: Sequence[int]) -> float:
        return float(len(ids))

    def train(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int], cfg, generator: torch.Generator,
              *, progress: bool = False, loss_fn=None) -> torch.nn.Module:
        """Train from scratch with the SGD recipe ``cfg`` (a :class:`~influal.config.TrainConfig`)."""
        from ..train import train_classifier

        return train_classifier(model, self, dataset, ids, cfg, generator, progress=progress, loss_fn=loss_fn)
