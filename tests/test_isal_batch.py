"""isal_batch end to end on a small classifier: its gradients, its Hessian's scale and its greedy against an
independent brute-force computation with autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import trained_blob_classifier

from influal.api import SelectionContext
from influal.core.errors import ConfigError
from influal.influence import InfluenceEngine, ParamScope
from influal.influence.grads import per_sample_grads
from influal.influence.greedy import batch_value
from influal.settings import InfluenceConfig
from influal.strategies import make_strategy


@pytest.fixture(scope="module")
def trained():
    task, model, splits = trained_blob_classifier(pool=60, labeled=15, seed=3)
    return task, model, splits, np.arange(15)


def _autograd_rows(task, model, scope, dataset, ids, targets=None):
    rows = []
    for i in ids:
        _, x, y = next(iter(task.batches(dataset, [int(i)], 1)))
        y = model(x).argmax(1) if targets is None else y
        rows.append(scope.grad(task.loss(model, x, y).sum()))
    return torch.stack(rows).double()


def _summed_loss(model, scope, x, y):
    """The summed cross-entropy of (x, y) as a function of the scope's flat parameters."""
    def loss(flat):
        params = {**dict(model.named_parameters()), **scope.as_dict(flat)}
        logits = torch.func.functional_call(model, params, (x,))
        return torch.nn.functional.cross_entropy(logits.double(), y, reduction="sum")
    return loss


def _independent_problem(task, model, splits, labeled, unlabeled, damping):
    """Everything by autograd, without the engine: the last-layer scope, its parameters θ, A = Hessian of the
    summed labeled loss + n λ I, and the candidates' pseudo-label gradients G."""
    scope = ParamScope(model, "last", task.influence_hooks())
    theta = scope.values().detach().clone()
    _, xl, yl = next(iter(task.batches(splits.pool, labeled, len(labeled))))
    A = torch.autograd.functional.hessian(_summed_loss(model, scope, xl, yl), theta).double()
    A += len(labeled) * damping * torch.eye(len(theta), dtype=torch.float64)
    return scope, theta, A, _autograd_rows(task, model, scope, splits.pool, unlabeled)


def _context(trained, unlabeled):
    task, model, splits, labeled = trained
    return SelectionContext(model=model, task=task, pool=splits.pool, labeled_ids=labeled, unlabeled_ids=unlabeled,
                            reference=splits.val)


def test_closed_form_gradients_match_autograd_in_the_scope_layout(trained):
    task, model, splits, _ = trained
    scope = ParamScope(model, "last", task.influence_hooks())
    _, x, _ = next(iter(task.batches(splits.pool, np.arange(20, 30), 10)))
    closed = per_sample_grads(model, task, x, None, scope, task.influence_hooks())
    generic = per_sample_grads(model, task, x, None, scope, hooks=None)  # one backward per sample
    assert closed.shape == (10, scope.numel)
    assert torch.allclose(closed, generic, atol=1e-6)


def test_selection_is_the_brute_force_greedy_on_an_independent_hessian(trained):
    task, model, splits, labeled = trained
    unlabeled, damping = np.arange(15, 60), 0.05
    strategy = make_strategy("isal_batch", objective="linear", damping=damping, candidates=None)
    picked = strategy.select(_context(trained, unlabeled), 4)

    scope, _, A, G = _independent_problem(task, model, splits, labeled, unlabeled, damping)
    v = _autograd_rows(task, model, scope, splits.val, np.arange(len(splits.val)), targets="true").sum(0)
    chosen: list[int] = []
    for _ in range(4):
        base = batch_value(A, G, v, chosen)
        gains = {j: batch_value(A, G, v, chosen + [j]) - base for j in range(len(G)) if j not in chosen}
        chosen.append(max(gains, key=gains.get))
    assert picked.ids.tolist() == unlabeled[chosen].tolist()
    assert picked.info["batch_value"] == pytest.approx(batch_value(A, G, v, chosen), rel=1e-4)
    singles = np.array([batch_value(A, G, v, [j]) for j in range(len(G))])
    assert np.allclose(-picked.scores, singles, rtol=1e-4, atol=1e-8)


def test_the_lookahead_selection_is_the_brute_force_one_on_the_reference_logits(trained):
    task, model, splits, labeled = trained
    unlabeled, damping = np.arange(15, 60), 0.05
    strategy = make_strategy("isal_batch", objective="loss", damping=damping, candidates=None)
    picked = strategy.select(_context(trained, unlabeled), 3)

    scope, theta, A, G = _independent_problem(task, model, splits, labeled, unlabeled, damping)
    _, xr, yr = next(iter(task.batches(splits.val, np.arange(len(splits.val)), len(splits.val))))
    reference_loss = _summed_loss(model, scope, xr, yr)

    def after(rows):  # the reference loss at θ - (A + Σ g gᵀ)⁻¹ Σ g, evaluated by the model itself
        Gs = G[rows]
        step = torch.linalg.solve(A + Gs.T @ Gs, Gs.sum(0))
        with torch.no_grad():
            return float(reference_loss((theta.double() - step).float()))

    chosen: list[int] = []
    for _ in range(3):
        values = {j: after(chosen + [j]) for j in range(len(G)) if j not in chosen}
        chosen.append(min(values, key=values.get))
    assert picked.ids.tolist() == unlabeled[chosen].tolist()
    with torch.no_grad():
        base = float(reference_loss(theta))
    assert picked.info["batch_value"] == pytest.approx(base - after(chosen), rel=1e-3)


def test_the_capped_selection_is_the_brute_force_one(trained):
    task, model, splits, labeled = trained
    unlabeled, damping = np.arange(15, 60), 0.05
    strategy = make_strategy("isal_batch", objective="capped", damping=damping, candidates=None)
    picked = strategy.select(_context(trained, unlabeled), 4)

    scope, _, A, G = _independent_problem(task, model, splits, labeled, unlabeled, damping)
    ref = np.arange(len(splits.val))
    R = _autograd_rows(task, model, scope, splits.val, ref, targets="true")
    D = G @ torch.linalg.solve(A, R.T)
    _, xr, yr = next(iter(task.batches(splits.val, ref, len(ref))))
    with torch.no_grad():
        caps = task.loss(model, xr, yr).double()

    def value(rows):
        return float(torch.minimum(D[rows].sum(0), caps).sum()) if rows else 0.0

    chosen: list[int] = []
    for _ in range(4):
        gains = {j: value(chosen + [j]) for j in range(len(G)) if j not in chosen}
        chosen.append(max(gains, key=gains.get))
    assert picked.ids.tolist() == unlabeled[chosen].tolist()
    assert picked.info["batch_value"] == pytest.approx(value(chosen), rel=1e-4)


def test_a_scope_too_large_for_a_dense_hessian_is_refused_at_start(trained):
    task, model, _, _ = trained
    with pytest.raises(ConfigError, match="max_params"):
        make_strategy("isal_batch", scope="weights", max_params=10).check(task, model)
    with pytest.raises(ConfigError, match="objective 'linear'"):
        make_strategy("isal_batch", objective="loss", scope="weights").check(task, model)
    make_strategy("isal_batch", scope="weights").check(task, model)
    with pytest.raises(ConfigError, match="damping"):
        make_strategy("isal_batch", damping=0)
    with pytest.raises(ConfigError, match="candidates"):
        make_strategy("isal_batch", candidates=0)


def test_engine_gradients_are_the_rows_the_strategy_uses(trained):
    task, model, splits, _ = trained
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="last", solver="exact"))
    rows = engine.gradients(splits.pool, np.arange(5))
    scope = ParamScope(model, "last", task.influence_hooks())
    assert torch.allclose(rows.double(), _autograd_rows(task, model, scope, splits.pool, np.arange(5)), atol=1e-6)
