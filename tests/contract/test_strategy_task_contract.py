"""One contract, every registered strategy × every registered task (scikit-activeml's template-test idea).

For each pair whose capabilities fit: exactly ``budget`` unique ids from the unlabeled candidates, never a labeled
one; the same seed gives the same selection; the documented scores shape (None, or one float per candidate);
settings that round-trip through JSON; a clear ConfigError for a budget of 0 or above the candidates. For each
pair that does not fit, the refusal comes at start (``strategy.check``), not mid-round. And the context itself
refuses overlapping labeled / unlabeled ids and ids outside the pool.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import blob_splits
from detection_utils import canvas, detector, one_thread

from influal.api import NotSupported, SelectionContext, check_selection
from influal.core.errors import ConfigError
from influal.settings import TrainConfig
from influal.strategies import STRATEGIES, make_strategy
from influal.tasks import TASKS
from influal.tasks.classification import ClassificationTask, SmallCNN
from influal.tasks.detection import DetectionTask

BUDGET = 3
# quick settings so the suite stays fast; each strategy's defaults are exercised in its own tests
QUICK = {
    "isal": {"lissa_depth": 4, "lissa_repeats": 1, "scale": 100.0, "batch_size": 8},
    "isal_diverse": {"lissa_depth": 4, "lissa_repeats": 1, "scale": 100.0, "batch_size": 8},
    "bald": {"samples": 3},
    "localization_stability": {"noise_levels": [0.2]},
    "det_learning_loss": {"epochs": 3},
}
BUILT_IN_TASKS = ("classification", "detection")


def _strategy(name: str):
    return make_strategy(name, **QUICK.get(name, {}))


class Problem:
    """A task with a data set, labeled / unlabeled ids and a model factory, trained per strategy when needed."""

    def __init__(self, task, pool, val, labeled, unlabeled, build, train_cfg, train):
        self.task, self.pool, self.val = task, pool, val
        self.labeled, self.unlabeled = labeled, unlabeled
        self.build, self.train_cfg, self.train = build, train_cfg, train
        self._plain = None

    def model_for(self, strategy):
        torch.manual_seed(0)
        model = self.build()
        prepared = strategy.prepare_training(model, self.task, self.pool, self.labeled, self.train_cfg)
        if prepared is None:
            if self._plain is None:
                self._plain = self._fit(model, {})
            return self._plain
        trained, loss_fn = prepared
        self._fit(trained, {"loss_fn": loss_fn})
        return model

    def _fit(self, model, extra):
        if self.train:
            self.task.train(model, self.pool, self.labeled, self.train_cfg, torch.Generator().manual_seed(0), **extra)
        return model.eval()

    def context(self, model, seed: int = 7, **changes) -> SelectionContext:
        kwargs = dict(model=model, task=self.task, pool=self.pool, labeled_ids=self.labeled,
                      unlabeled_ids=self.unlabeled, reference=self.val, generator=torch.Generator().manual_seed(seed))
        kwargs.update(changes)
        return SelectionContext(**kwargs)


def _classification() -> Problem:
    splits = blob_splits(pool=40, val=12, test=4, size=8, seed=1)
    return Problem(ClassificationTask(3, eval_batch_size=16), splits.pool, splits.val, np.arange(12),
                   np.arange(12, 40), lambda: SmallCNN(3, 1, width=4, hidden=8),
                   TrainConfig(epochs=2, lr=0.05, batch_size=8, milestones=()), train=True)


def _detection(root) -> Problem:
    data = canvas(root)

    def build():
        return detector("fcos")

    class Frozen(Problem):  # an untrained tiny detector, frozen for influence as training would leave it
        def _fit(self, model, extra):
            return model.eval().freeze_for_influence()

    return Frozen(DetectionTask(10, batch_size=4), data["pool"], data["val"], np.arange(4), np.arange(4, 12), build,
                  TrainConfig(epochs=1, lr=0.01, batch_size=4, milestones=()), train=False)


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    return {"classification": _classification(), "detection": _detection(tmp_path_factory.mktemp("canvas"))}


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _pairs(fit: bool):
    out = []
    for task_name in BUILT_IN_TASKS:
        task_cls = {"classification": ClassificationTask, "detection": DetectionTask}[task_name]
        for name in STRATEGIES.names():
            cls = STRATEGIES.get(name)
            requires = getattr(cls, "requires", frozenset())
            ok = requires - {"reference_set"} <= set(task_cls.capabilities)
            if ok == fit:
                out.append((task_name, name))
    return out


FITTING = _pairs(True)
REFUSED = _pairs(False)


def test_every_registered_strategy_and_task_is_covered():
    assert set(BUILT_IN_TASKS) <= set(TASKS.names())
    covered = {name for _, name in FITTING}
    assert covered == set(STRATEGIES.names())  # every strategy fits at least one task
    for task_name in BUILT_IN_TASKS:
        assert {"isal", "random", "coreset"} <= {s for t, s in FITTING if t == task_name}  # the task-agnostic ones
    assert ("detection", "entropy") in REFUSED and ("classification", "localization_stability") in REFUSED


@pytest.mark.parametrize("task_name, name", FITTING)
def test_contract(problems, task_name, name):
    problem = problems[task_name]
    strategy = _strategy(name)
    model = problem.model_for(strategy)
    strategy.check(problem.task, model)
    ctx = problem.context(model)
    selection = strategy.select(ctx, BUDGET)
    check_selection(selection, ctx, BUDGET, name)  # exact budget, unique, from the candidates, scores aligned
    ids = np.asarray(selection.ids)
    assert not set(ids.tolist()) & set(ctx.labeled_ids.tolist())
    assert selection.scores is None or selection.scores.shape == (len(ctx.unlabeled_ids),)
    json.dumps(selection.summary())  # recorded in state files: plain JSON
    # deterministic under a seed: a fresh strategy object, a fresh context with the same generator seed
    again = _strategy(name)
    model_again = problem.model_for(again)
    assert np.array_equal(again.select(problem.context(model_again), BUDGET).ids, ids)
    # a budget of zero, or above the candidates, is a clear error
    for bad in (0, len(ctx.unlabeled_ids) + 1):
        with pytest.raises(ConfigError, match="budget"):
            strategy.select(problem.context(model), bad)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_settings_round_trip_through_json(name):
    strategy = _strategy(name)
    settings = json.loads(json.dumps(strategy.settings()))
    assert make_strategy(name, **settings).settings() == settings
    with pytest.raises(ConfigError, match="does not take the setting"):
        make_strategy(name, no_such_setting=1)


@pytest.mark.parametrize("task_name, name", REFUSED)
def test_a_strategy_the_task_cannot_serve_is_refused_at_start(problems, task_name, name):
    problem = problems[task_name]
    strategy = _strategy(name)
    torch.manual_seed(0)
    with pytest.raises(NotSupported, match=f"strategy '{name}' needs"):
        strategy.check(problem.task, problem.build())


@pytest.mark.parametrize("task_name", BUILT_IN_TASKS)
def test_the_context_refuses_overlapping_and_out_of_range_ids(problems, task_name):
    problem = problems[task_name]
    model = problem.build()
    n = len(problem.pool)
    with pytest.raises(ConfigError, match="both labeled and unlabeled"):
        problem.context(model, labeled_ids=np.arange(4), unlabeled_ids=np.arange(3, 8))
    with pytest.raises(ConfigError, match="outside the pool"):
        problem.context(model, unlabeled_ids=np.array([n - 1, n]))
    with pytest.raises(ConfigError, match="outside the pool"):
        problem.context(model, labeled_ids=np.array([-1, 0]))
    with pytest.raises(ConfigError, match="lists an id twice"):
        problem.context(model, unlabeled_ids=np.array([5, 5, 6]))
    with pytest.raises(ConfigError, match="integer ids"):
        problem.context(model, unlabeled_ids=np.array([5.0, 6.0]))
