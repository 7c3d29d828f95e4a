"""isal_diverse: ISAL's shortlist, then k-center or k-means++ among it, checked against doing both by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import trained_blob_classifier

from influal.api import SelectionContext, take_lowest
from influal.core.errors import ConfigError
from influal.strategies import make_strategy
from influal.strategies.badge import gradient_factors
from influal.strategies.coreset import collect_features

SETTINGS = {"solver": "exact", "scope": "last", "damping": 0.01}


@pytest.fixture(scope="module")
def problem():
    task, model, splits = trained_blob_classifier(pool=80, labeled=12, seed=4)
    return task, model, splits, np.arange(12), np.arange(12, 80)


def _ctx(problem, seed=3):
    task, model, splits, labeled, unlabeled = problem
    return SelectionContext(model=model, task=task, pool=splits.pool, labeled_ids=labeled, unlabeled_ids=unlabeled,
                            reference=splits.val, generator=torch.Generator().manual_seed(seed))


def test_a_shortlist_of_one_budget_is_plain_isal(problem):
    isal = make_strategy("isal", **SETTINGS).select(_ctx(problem), 5)
    diverse = make_strategy("isal_diverse", shortlist=1, **SETTINGS).select(_ctx(problem), 5)
    assert sorted(diverse.ids.tolist()) == sorted(isal.ids.tolist())
    assert np.array_equal(diverse.scores, isal.scores)


def test_kcenter_is_core_set_among_the_most_influential(problem):
    from influal.strategies.kernels import k_center_greedy

    task, model, splits, labeled, _ = problem
    isal = make_strategy("isal", **SETTINGS).select(_ctx(problem), 5)
    short = take_lowest(_ctx(problem).unlabeled_ids, isal.scores, 15)
    feats = collect_features(model, task, splits.pool, short, 16)
    picked, _ = k_center_greedy(feats, collect_features(model, task, splits.pool, labeled, 16), 5)
    diverse = make_strategy("isal_diverse", shortlist=3, diversity="kcenter", **SETTINGS).select(_ctx(problem), 5)
    assert diverse.ids.tolist() == short[picked].tolist()
    assert diverse.info["shortlist"] == 15


def test_kmeanspp_is_badge_among_the_most_influential(problem):
    from influal.strategies.kernels import kmeans_pp_factored

    task, model, splits, _, _ = problem
    isal = make_strategy("isal", **SETTINGS).select(_ctx(problem), 4)
    short = take_lowest(_ctx(problem).unlabeled_ids, isal.scores, 10)
    a, f = gradient_factors(model, task, splits.pool, short, 16)
    picked = kmeans_pp_factored(a, f, 4, torch.Generator().manual_seed(3))
    diverse = make_strategy("isal_diverse", shortlist=2.5, diversity="kmeans++", **SETTINGS).select(_ctx(problem), 4)
    assert diverse.ids.tolist() == short[picked].tolist()


def test_bad_settings_are_refused_when_built():
    with pytest.raises(ConfigError, match="shortlist"):
        make_strategy("isal_diverse", shortlist=0.5)
    with pytest.raises(ConfigError, match="diversity"):
        make_strategy("isal_diverse", diversity="dpp")
    with pytest.raises(ConfigError, match="does not take"):
        make_strategy("isal_diverse", no_such=1)
    default = make_strategy("isal_diverse")  # the paper's influence settings, k-means++ where a head exists
    assert default.settings()["solver"] == "lissa" and default.settings()["scope"] == "weights"
    assert default.settings()["diversity"] == "auto" and default.settings()["shortlist"] == 3.0
    assert make_strategy("isal_diverse", solver="cg", scope="last").settings()["solver"] == "cg"
    assert make_strategy("isal_diverse", **default.settings()).settings() == default.settings()


def test_label_variance_is_the_variance_of_the_influence_over_the_predicted_labels(problem):
    from influal.influence import ParamScope

    task, model, splits, _, _ = problem
    ctx = _ctx(problem)
    strategy = make_strategy("isal_diverse", score="label_variance", diversity="kmeans++", **SETTINGS)
    strategy.check(task, model)
    selection = strategy.select(ctx, 4)
    s = ctx.extras["influence"].solve.s
    scope = ParamScope(model, "last", task.influence_hooks())
    for pos in (0, 7, 30):
        item = int(ctx.unlabeled_ids[pos])
        _, x, _ = next(iter(task.batches(splits.pool, [item], 1)))
        with torch.no_grad():
            p = torch.softmax(model(x), 1)[0].double()
        per_label = torch.tensor([float(scope.grad(task.loss(model, x, torch.tensor([y])).sum()) @ s)
                                  for y in range(3)], dtype=torch.float64)
        mean = float((p * per_label).sum())
        assert abs(mean) < 1e-4 * float(per_label.abs().max())  # E_y[g_y·s] = 0 under the model's own p
        assert -selection.scores[pos] == pytest.approx(float((p * (per_label - mean) ** 2).sum()), rel=1e-5)


def test_label_variance_needs_the_last_layer(problem):
    task, model, _, _, _ = problem
    with pytest.raises(ConfigError, match="scope 'last'"):
        make_strategy("isal_diverse", score="label_variance", scope="weights").check(task, model)
    with pytest.raises(ConfigError, match="score"):
        make_strategy("isal_diverse", score="entropy")


def test_per_cost_divides_the_wanted_scores_by_the_predicted_cost(problem, monkeypatch):
    task, model, splits, _, _ = problem
    plain = make_strategy("isal_diverse", diversity="kcenter", **SETTINGS).select(_ctx(problem), 4)
    costs = 1.0 + (np.arange(len(splits.pool)) % 3)  # a known cost per item
    monkeypatch.setattr(type(task), "predicted_costs", lambda self, m, d, ids: costs[np.asarray(ids)])
    aware = make_strategy("isal_diverse", diversity="kcenter", per_cost=True, **SETTINGS).select(_ctx(problem), 4)
    c = costs[_ctx(problem).unlabeled_ids]
    expected = np.where(plain.scores < 0, plain.scores / c, plain.scores * c)
    assert np.allclose(aware.scores, expected)
    assert aware.info["per_cost"] is True
    with pytest.raises(ConfigError, match="per_cost"):
        make_strategy("isal_diverse", per_cost="yes")


def test_a_detectors_predicted_cost_is_its_confident_detections(tmp_path):
    from detection_utils import canvas, detector

    from influal.tasks.detection import DetectionTask

    data = canvas(tmp_path)
    task = DetectionTask(10, batch_size=4, score_threshold=0.0)
    model = detector("fcos").eval()
    ids = np.arange(3)
    costs = task.predicted_costs(model, data["pool"], ids)
    with torch.no_grad():
        counts = [len(d["boxes"]) for d in task.detect(model, data["pool"], ids)]
    assert costs.tolist() == [max(1.0, float(n)) for n in counts]
