"""Detection baselines: k-center greedy against brute force, the learning-loss ranking loss, and the contract."""

import numpy as np
import pytest
import torch

from influal.detection.strategies import (DetectionCoreSet, DetectionLearningLoss, LocalizationStability,
                                          add_gaussian_noise, k_center_greedy, ranking_loss)
from influal.detection.task import DetectionTask
from influal.errors import ConfigError
from influal.strategies import DETECTION_STRATEGIES, STRATEGIES, SelectionContext, make_strategy
from influal.tasks import ClassificationTask

from detection_utils import canvas, detector, one_thread


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def test_k_center_greedy_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    labeled, unlabeled = torch.randn(5, 3, generator=g), torch.randn(40, 3, generator=g)
    picks, gaps = k_center_greedy(labeled, unlabeled, 6)
    centres = [labeled[i] for i in range(len(labeled))]
    chosen = []
    for _ in range(6):
        best = max((i for i in range(40) if i not in chosen),
                   key=lambda i: min(float((unlabeled[i] - c).norm()) for c in centres))
        chosen.append(best)
        centres.append(unlabeled[best])
    assert picks.tolist() == chosen
    assert np.all(np.diff(gaps) <= 1e-12)  # the covering radius never grows


def test_ranking_loss_is_the_ll4al_margin_loss():
    pred = torch.tensor([2.0, 0.0, 1.0, 3.0])
    target = torch.tensor([5.0, 1.0, 2.0, 4.0])
    # pairs (0, 3) and (1, 2): targets 5 > 4 and 1 < 2; predictions 2 - 3 = -1 and 0 - 1 = -1
    expected = (max(0.0, 1.0 - 1 * (-1.0)) + max(0.0, 1.0 - (-1) * (-1.0))) / 2
    assert float(ranking_loss(pred, target)) == pytest.approx(expected)


def test_gaussian_noise_is_seeded_and_clipped():
    images = [torch.full((3, 4, 4), 0.5), torch.zeros(3, 4, 4)]
    a = add_gaussian_noise(images, 0.3, torch.Generator().manual_seed(0))
    b = add_gaussian_noise(images, 0.3, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(((x >= 0) & (x <= 1)).all() for x in a) and not torch.equal(a[0], images[0])


@pytest.fixture(scope="module")
def context_parts(tmp_path_factory):
    with one_thread():
        data = canvas(tmp_path_factory.mktemp("canvas"))
        model = detector("fcos").eval().freeze_for_influence()
    return data, model


def _ctx(parts, seed=0):
    data, model = parts
    return SelectionContext(model=model, task=DetectionTask(10, batch_size=4), pool=data["pool"],
                            labeled_ids=np.arange(4), unlabeled_ids=np.arange(4, 12), reference=data["val"],
                            generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(DETECTION_STRATEGIES))
def test_detection_strategies_obey_the_contract(context_parts, name):
    strategy = make_strategy(name)
    assert strategy.name == name and name not in STRATEGIES
    if isinstance(strategy, DetectionLearningLoss):
        strategy.epochs = 5
    first = strategy.select(_ctx(context_parts), 3)
    again = make_strategy(name)
    if isinstance(again, DetectionLearningLoss):
        again.epochs = 5
    second = again.select(_ctx(context_parts), 3)
    ids = first.ids.tolist()
    assert len(ids) == 3 == len(set(ids)) and set(ids) <= set(range(4, 12))
    assert ids == second.ids.tolist()
    with pytest.raises(ConfigError):
        strategy.select(_ctx(context_parts), 9)


def test_localization_stability_picks_the_least_stable_images(context_parts):
    strategy = LocalizationStability(noise_levels=(0.2,))
    ctx = _ctx(context_parts)
    scores = strategy.scores(ctx, ctx.unlabeled_ids)
    chosen = strategy.select(_ctx(context_parts), 2)
    assert np.all((scores >= 0) & (scores <= 1))
    assert sorted(chosen.ids.tolist()) == sorted(ctx.unlabeled_ids[np.argsort(scores, kind="stable")[:2]].tolist())


def test_detection_strategies_refuse_a_classification_task(context_parts):
    data, model = context_parts
    ctx = SelectionContext(model=model, task=ClassificationTask(10), pool=data["pool"], labeled_ids=np.arange(2),
                           unlabeled_ids=np.arange(2, 8))
    for strategy in (LocalizationStability(), DetectionCoreSet(), DetectionLearningLoss()):
        with pytest.raises(ConfigError, match="--task detection"):
            strategy.select(ctx, 2)
