"""Inverse-HVP solvers against the exact (H + λI)^-1 v on a small problem whose Hessian is computed densely."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import blob_splits, mlp_model

from influal.core.errors import SolverError
from influal.influence import AutoLiSSA, ConjugateGradient, ExactSolver, HessianOperator, LiSSA, ParamScope
from influal.tasks.classification import ClassificationTask


def _trained_problem():
    splits = blob_splits(pool=90, val=30, test=30)
    model = mlp_model()
    task = ClassificationTask(3)
    ids = np.arange(60)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    x, y = splits.pool.get_batch(ids)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return splits, model, task, ids


def _dense_hessian_by_autograd(model, scope, x, y):
    """An independent dense Hessian: torch.autograd.functional.hessian of the mean loss of the flat scope."""
    theta = scope.values().clone()

    def loss_of(flat):
        parts = scope.unflatten(flat)
        params = {n: p.detach() for n, p in model.named_parameters()}
        params.update(dict(zip(scope.names, parts)))
        out = torch.func.functional_call(model, params, (x,))
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss_of, theta)


@pytest.mark.parametrize("scope_name", ["last", "all"])
def test_dense_hessian_matches_autograd_hessian(scope_name):
    splits, model, task, ids = _trained_problem()
    scope = ParamScope(model, scope_name, task.influence_hooks())
    op = HessianOperator(model, task, splits.pool, ids, scope, batch_size=16)  # several batches: weighting matters
    x, y = splits.pool.get_batch(ids)
    H_ref = _dense_hessian_by_autograd(model, scope, x, y)
    H = op.dense(chunk=7)
    assert torch.allclose(H, H_ref, atol=1e-5, rtol=1e-4)
    vec = torch.randn(scope.numel, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(op.full(vec), H_ref @ vec, atol=1e-5, rtol=1e-4)


def _exact_and_op(damping):
    splits, model, task, ids = _trained_problem()
    scope = ParamScope(model, "all")
    op = HessianOperator(model, task, splits.pool, ids, scope, batch_size=len(ids))
    v = torch.randn(scope.numel, generator=torch.Generator().manual_seed(2))
    H = op.dense().double()
    exact = torch.linalg.solve(H + damping * torch.eye(len(v), dtype=H.dtype), v.double()).float()
    return op, v, exact


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_lissa_converges_to_exact_damped_inverse():
    # Full-batch products make LiSSA deterministic; its fixed point is scale (H + d·scale I)^-1 v.
    damping, scale = 0.005, 20.0  # effective λ = 0.1
    op, v, exact = _exact_and_op(damping * scale)
    lissa = LiSSA(damping=damping, scale=scale, depth=4000, repeats=1, batch_size=len(op.ids), divide_by_scale=True)
    result = lissa.solve(op, v, torch.Generator().manual_seed(0))
    assert result.effective_damping == pytest.approx(0.1)
    assert _rel(result.s, exact) < 1e-3
    # full-batch chains: deterministic, so the a-posteriori bound applies and the solver vouches for the result
    assert result.info["stochastic"] is False and result.info["converged"] is True
    assert result.info["estimated_error"] < 1e-3 and result.info["diverged"] is False


def test_lissa_paper_update_keeps_the_scale_factor():
    damping, scale = 0.01, 10.0
    op, v, exact = _exact_and_op(damping * scale)
    lissa = LiSSA(damping=damping, scale=scale, depth=3000, repeats=1, batch_size=len(op.ids))
    result = lissa.solve(op, v, torch.Generator().manual_seed(0))
    assert _rel(result.s / scale, exact) < 1e-3
    assert result.info["converged"] is True and max(result.info["norm_trace"]) <= 1 / damping  # ‖h‖ <= ‖v‖/d


def test_lissa_with_minibatches_is_close_and_seeded():
    op, v, exact = _exact_and_op(0.5)
    lissa = LiSSA(damping=0.05, scale=10.0, depth=400, repeats=8, batch_size=16, divide_by_scale=True)
    a = lissa.solve(op, v, torch.Generator().manual_seed(3)).s
    b = lissa.solve(op, v, torch.Generator().manual_seed(3)).s
    assert torch.equal(a, b)
    assert _rel(a, exact) < 0.1
    info = lissa.solve(op, v, torch.Generator().manual_seed(3)).info
    # random mini-batches: the spread of the 8 chains measures the noise of their mean
    assert info["stochastic"] is True and 0 < info["chain_std_error"] < 0.1
    assert info["converged"] == (info["chain_std_error"] <= info["noise_tol"] and info["bias_bound"] <= info["tol"])


def test_cg_and_exact_solvers_match_dense_solve():
    op, v, exact = _exact_and_op(0.01)
    cg = ConjugateGradient(damping=0.01, max_iter=500, tol=1e-8).solve(op, v)
    assert _rel(cg.s, exact) < 1e-4
    assert cg.info["converged"] is True and cg.info["final_residual"] < 1e-8
    ex = ExactSolver(damping=0.01).solve(op, v)
    assert _rel(ex.s, exact) < 1e-5
    assert ex.info["converged"] is True and ex.info["final_residual"] < 1e-6


def test_auto_lissa_reaches_target_accuracy():
    op, v, exact = _exact_and_op(0.1)
    result = AutoLiSSA(damping=0.1, repeats=1, batch_size=len(op.ids), tol=1e-6, max_depth=20000).solve(
        op, v, torch.Generator().manual_seed(0))
    assert result.info["lambda_max"] > 0
    assert _rel(result.s, exact) < 1e-3
    assert result.info["converged"] is True and result.info["depth_capped"] is False
    # Lanczos brackets the spectrum of the dense Hessian from inside
    eigs = torch.linalg.eigvalsh(op.dense().double())
    assert float(eigs[0]) - 1e-4 <= result.info["lambda_min"] <= result.info["lambda_max"] <= float(eigs[-1]) + 1e-4
    assert result.info["lambda_max"] > 0.95 * float(eigs[-1])


def test_lissa_divergence_raises_instead_of_resetting():
    op, v, _ = _exact_and_op(0.0)
    # scale far below the top eigenvalue: the recursion explodes
    lissa = LiSSA(damping=0.0, scale=1e-3, depth=200, repeats=1, batch_size=len(op.ids))
    with pytest.raises(SolverError):
        lissa.solve(op, v, torch.Generator().manual_seed(0))
    # on_divergence="warn" tolerates growth, never non-finite values
    with pytest.raises(SolverError, match="non-finite"):
        LiSSA(damping=0.0, scale=1e-3, depth=200, repeats=1, batch_size=len(op.ids),
              on_divergence="warn").solve(op, v, torch.Generator().manual_seed(0))


def test_exact_solver_reports_indefinite_hessian():
    op, v, _ = _exact_and_op(0.0)
    with pytest.raises(SolverError, match="positive definite"):
        ExactSolver(damping=-100.0).solve(op, v)


def test_last_layer_hessian_from_cached_features_matches_double_backward():
    from influal.tasks.classification.influence import LastLayerHessian

    splits, model, task, ids = _trained_problem()
    scope = ParamScope(model, "last", task.influence_hooks())
    generic = HessianOperator(model, task, splits.pool, ids, scope, batch_size=16)
    cached = LastLayerHessian(model, task.influence_hooks(), splits.pool, ids, scope, batch_size=16)
    assert torch.allclose(cached.dense(chunk=5), generic.dense(), atol=1e-6, rtol=1e-5)
    vec = torch.randn(scope.numel, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(cached.full(vec), generic.full(vec), atol=1e-6, rtol=1e-5)
    a = cached.sample(vec, torch.Generator().manual_seed(4), 8)
    b = generic.sample(vec, torch.Generator().manual_seed(4), 8)  # same draw of labeled items
    assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert float(torch.linalg.eigvalsh(cached.dense().double())[0]) > -1e-8  # convex in the last layer


def test_the_identity_solve_builds_no_hessian():
    from influal.influence import InfluenceEngine
    from influal.settings import InfluenceConfig

    splits, model, task, labeled = _trained_problem()
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="last", solver="identity"))

    def refuse(*args, **kwargs):
        raise AssertionError("the identity solve asked for the Hessian")

    engine.hessian = refuse
    v = engine.reference_gradient(splits.val, np.arange(len(splits.val)))
    result = engine.solve(v, splits.pool, labeled, torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.s, v)
    assert result.info["converged"] is True
