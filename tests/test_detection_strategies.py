"""Detection baselines: known answers (k-center greedy from the labeled set, the ranking loss, the noise, the
stability ranking) and the refusal of a task without detections. The contract itself is in tests/contract."""

import numpy as np
import pytest
import torch
from detection_utils import canvas, detector, one_thread

from influal.api import NotSupported, SelectionContext
from influal.strategies import CoresetStrategy, make_strategy
from influal.strategies.kernels import k_center_greedy, margin_ranking_loss
from influal.tasks.classification import ClassificationTask
from influal.tasks.detection.strategies import DetectionLearningLoss, LocalizationStability, add_gaussian_noise
from influal.tasks.detection.task import DetectionTask


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def test_k_center_greedy_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    labeled, unlabeled = torch.randn(5, 3, generator=g), torch.randn(40, 3, generator=g)
    picks, gaps = k_center_greedy(unlabeled, labeled, 6)
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
    assert float(margin_ranking_loss(pred, target)) == pytest.approx(expected)


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
    for strategy in (LocalizationStability(), DetectionLearningLoss()):
        with pytest.raises(NotSupported, match="needs detections"):
            strategy.select(ctx, 2)


def test_det_coreset_is_core_set_on_the_detector_head_features(context_parts):
    assert isinstance(make_strategy("det_coreset"), CoresetStrategy)
    picked = make_strategy("det_coreset").select(_ctx(context_parts), 3).ids
    assert picked.tolist() == make_strategy("coreset").select(_ctx(context_parts), 3).ids.tolist()
