"""The peers benchmark's harness (benchmarks/peers.py, issue 15) on a tiny problem.

Runs only where the peers are installed (``.venv-peers``, ``make bench-peers``); in the main .venv the whole
module skips. Run it with ``.venv-peers/bin/python -m pytest tests/test_peers_harness.py -p no:cacheprovider -o
addopts=""``. Timing itself lives in the benchmark, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("kronfluence")
pytest.importorskip("dattri")
pytest.importorskip("captum")
stats = pytest.importorskip("scipy.stats")

from benchmarks import peers  # noqa: E402
from influal.tasks.classification import ClassificationTask  # noqa: E402
from influal.tasks.classification.models import SmallCNN  # noqa: E402


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = SmallCNN(10, 1, width=2, hidden=8)  # 1,056 weights: the exact solve on all is quick
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the initial ones
        model(torch.randn(32, 1, 28, 28))
    data = peers._mnist_images(60)
    task = ClassificationTask(10, torch.device("cpu"))
    return peers.Problem(model.eval(), task, data, np.arange(10), np.arange(10, 30), np.arange(30, 60))


RUNNABLE = [name for name, c in peers.CONTENDERS.items() if peers.available(c) is None]


def test_every_installed_peer_is_importable():
    missing = {name for name, c in peers.CONTENDERS.items() if peers.available(c) is not None}
    assert missing <= {"pydvl-cg", "pydvl-direct"}, missing  # pyDVL: no release imports with numpy 2


@pytest.mark.parametrize("scope", ["last", "weights"])
@pytest.mark.parametrize("name", RUNNABLE)
def test_contender_scores_every_pool_item(problem, name, scope):
    try:
        out = peers.run_one(peers.CONTENDERS[name], problem, scope)
    except (peers.Unsupported, peers.Failed) as exc:  # recorded as such by the benchmark
        # every contender does the last layer, except those run on the weight tensors only
        assert scope == "weights" or scope not in peers.CONTENDERS[name].scopes, exc
        return
    scores = out["scores"]
    assert scores.shape == (len(problem.pool_ids),)
    assert np.isfinite(scores).all()
    assert out["total_s"] > 0 and all(v >= 0 for v in out["phases_s"].values())


def test_peers_agree_with_the_exact_solve_on_the_last_layer(problem):
    """The signs and the problem are the same for all: the damped-inverse solvers rank like influal's exact solve."""
    exact = peers.run_one(peers.CONTENDERS["influal-exact"], problem, "last")["scores"]
    for name in ("influal-cg", "kronfluence-ekfac", "dattri-cg", "dattri-explicit"):
        scores = peers.run_one(peers.CONTENDERS[name], problem, "last")["scores"]
        assert peers.spearman(scores, exact) > 0.9, name


def test_spearman_by_hand_with_ties():
    # ranks of a: 1, 2.5, 2.5, 4; of b: 1, 2, 3, 4 -> Pearson of those ranks
    a, b = [1.0, 2.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert peers.spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert peers.spearman(a, b) == pytest.approx(0.9486832980505138, abs=1e-12)
    np.testing.assert_array_equal(peers.rankdata([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])


def test_spearman_against_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 6, size=50).astype(float)  # many ties
        b = a + rng.normal(size=50)
        assert peers.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert peers.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(peers.spearman([1, 1, 1], [1, 2, 3]))
    assert np.isnan(peers.spearman([1, np.nan, 3], [1, 2, 3]))
