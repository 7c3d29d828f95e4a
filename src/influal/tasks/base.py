"""The Task interface: the only place that knows what a label, a loss and a cost are.

Strategies and the influence engine talk to models through a task, so the same code serves
classifiers and detectors.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch.utils.data import Dataset

ModelFn = Callable[[Any], Any]


@runtime_checkable
class Task(Protocol):
    """What the loop, the strategies and the influence engine need from a task."""

    metric_name: str

    def batches(self, dataset: Dataset, ids: Sequence[int], batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, Any, Any]]:
        """Yield ``(ids, inputs, targets)`` on the task's device."""

    def loss(self, model: ModelFn, inputs: Any, targets: Any) -> torch.Tensor:
        """Per-sample losses, shape [n]. ``model`` may be a functional wrapper: only call it."""

    def pseudo_targets(self, model: ModelFn, inputs: Any) -> Any:
        """The model's own guess of the targets (argmax class / boxes above a score threshold)."""

    def features(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        """Per-sample embeddings [n, d] (for core-set and BADGE)."""

    def evaluate(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int] | None = None) -> dict[str, float]:
        """Metrics on a dataset (accuracy, or COCO AP for detection)."""

    def cost(self, dataset: Dataset, ids: Sequence[int]) -> float:
        """The labelling cost of ``ids``: number of labels, or ground-truth boxes."""

    def train(self, model: torch.nn.Module, dataset: Dataset, ids: Sequence[int], cfg: Any,
              generator: torch.Generator, *, progress: bool = False) -> torch.nn.Module:
        """Train ``model`` (freshly initialised) on ``ids``; return it in eval mode."""
