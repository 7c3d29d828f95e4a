"""An influal plug-in written outside the package: a new task (tabular classification of feature vectors with the
Brier loss, its own data-set format, model and settings block) and a new strategy (the lowest ids first).

Used by tests/contract/test_plugins.py both through ``register()`` (the Python API) and as an installed plug-in
found through its ``influal.tasks`` / ``influal.strategies`` entry points (``influal run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from influal import DatasetSplits, Selection, Strategy, Task, TaskPlugin, register_strategy, register_task
from influal.api import FEATURES, check_budget
from influal.core.batching import iterate_batches
from influal.core.registry import Registry
from influal.core.torch_utils import eval_mode
from influal.settings import Settings, check_positive, setting
from influal.training import train_sgd


class Vectors(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def get_batch(self, ids):
        ids = torch.as_tensor(ids, dtype=torch.long)
        return self.x[ids], self.y[ids]


class MLP(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, 16), nn.Tanh())
        self.out = nn.Linear(16, classes)

    def forward(self, x):
        return self.out(self.body(x))


class TabularTask(Task):
    """Classification of vectors with the Brier loss (a loss influal's classification hooks know nothing of)."""

    metric_name = "accuracy"
    capabilities = frozenset({FEATURES})

    def __init__(self, num_classes: int, device="cpu"):
        self.num_classes, self.device, self.eval_batch_size = num_classes, torch.device(device), 64

    def batches(self, dataset, ids, batch_size, *, shuffle=False, generator=None, drop_last=False):
        for batch_ids, x, y in iterate_batches(dataset, ids, batch_size, shuffle=shuffle, generator=generator,
                                               drop_last=drop_last):
            yield batch_ids, x.to(self.device), y.to(self.device)

    def loss(self, model, inputs, targets):
        probs = F.softmax(model(inputs), dim=1)
        return (probs - F.one_hot(targets, self.num_classes).to(probs.dtype)).pow(2).sum(1)

    @torch.no_grad()
    def pseudo_targets(self, model, inputs):
        return model(inputs).argmax(1)

    @torch.no_grad()
    def evaluate(self, model, dataset, ids=None):
        ids = np.arange(len(dataset)) if ids is None else ids
        with eval_mode(model):
            right = sum(int((model(x).argmax(1) == y).sum()) for _, x, y in self.batches(dataset, ids, 64))
        return {"accuracy": right / len(ids)}

    def train(self, model, dataset, ids, cfg, generator, *, progress=False, loss_fn=None):
        return train_sgd(model, self, dataset, ids, cfg, generator,
                         objective=lambda m, x, y, epoch: self.loss(m, x, y).mean(), progress=progress)

    @torch.no_grad()
    def features(self, model, inputs):
        return model.body(inputs)


@dataclass(frozen=True)
class TabularSettings(Settings):
    _section: ClassVar[str] = "tabular"

    noise: float = setting(0.8, help="spread of the generated blobs", flag="--tabular-noise")

    def __post_init__(self):
        check_positive("tabular.noise", self.noise)


DATASETS = Registry("tabular dataset")
MODELS = Registry("tabular model")


@DATASETS.register("blobs")
def blobs(config) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=g) * 2
    y = torch.arange(300) % 3
    x = centres[y] + config.task_settings.noise * torch.randn(300, 5, generator=g)
    parts = [Vectors(x[i::3], y[i::3]) for i in range(3)]
    return DatasetSplits("blobs", pool=parts[0], val=parts[1], test=parts[2], num_classes=3, in_channels=5,
                         image_size=1)


MODELS.register("mlp", lambda config, splits: MLP(splits.in_channels, splits.num_classes))


class TabularPlugin(TaskPlugin):
    name = "tabular"
    settings_class = TabularSettings
    metric = "accuracy"
    default_dataset = "blobs"
    default_model = "mlp"
    default_train_preset = "fast"

    def datasets(self):
        return DATASETS

    def models(self):
        return MODELS

    def build_task(self, config, splits, device):
        return TabularTask(splits.num_classes, device)


class LowestId(Strategy):
    """The ``budget`` lowest unlabeled ids after skipping ``offset`` of them: a known answer to test against."""

    name = "lowest_id"

    def __init__(self, offset: int = 0):
        self.offset = offset

    def select(self, ctx, budget):
        check_budget(ctx, budget)
        return Selection(np.sort(ctx.unlabeled_ids)[self.offset:self.offset + budget])


PLUGIN = TabularPlugin()


def register() -> None:
    register_task(PLUGIN)
    register_strategy("lowest_id", LowestId)
