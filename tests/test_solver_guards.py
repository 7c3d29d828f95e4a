"""Solvers never return garbage silently: every solve says whether it converged, divergence raises (or, for the
paper preset, warns without changing the result), lissa-auto converges with its defaults on influal's own models
and scopes, v = 0 gives s = 0, and the damping reported is the one used."""

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import blob_splits, blobs, linear_model, mlp_model
from torch import nn

from influal.api import DatasetSplits
from influal.core.errors import ConfigError, SolverError, SolverWarning
from influal.influence import InfluenceEngine, resolve_config
from influal.influence.solvers import (
    AUTO_MIN_HVP_BATCH,
    AutoLiSSA,
    ConjugateGradient,
    ExactSolver,
    IdentitySolver,
    LiSSA,
    make_solver,
)
from influal.settings import INFLUENCE_PRESETS, InfluenceConfig, TrainConfig
from influal.strategies import SelectionContext, make_strategy
from influal.tasks.classification import ClassificationTask
from influal.tasks.classification.models import ResNet18, SmallCNN


class MatrixOp:
    """A Hessian given as a matrix; every product is exact (``n = 1``: a mini-batch is the whole set)."""

    n = 1

    def __init__(self, A):
        self.A = A

    def full(self, vec):
        return self.A @ vec

    def sample(self, vec, generator, batch_size):
        return self.A @ vec

    def dense(self, chunk=64):
        return self.A.clone()


def _spd(eigenvalues, seed=0):
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float32)) @ q.T


def _old_lissa(op, v, generator, damping, scale, depth, repeats, batch_size):
    """influal 0.1's LiSSA loop, without its checks (they changed no value): the reference for "same numbers"."""
    chains = []
    for _ in range(repeats):
        h = v.clone()
        for _step in range(depth):
            hv = op.sample(h, generator, batch_size)
            h = v + (1.0 - damping) * h - hv / scale
        chains.append(h)
    return torch.stack(chains).mean(0)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _softmax_problem():
    """Logistic regression on blobs, trained a few steps: the last layer is the whole model (cheap products)."""
    splits = blob_splits(pool=100, val=30, test=10)
    model = linear_model()
    task = ClassificationTask(3)
    labeled = np.arange(60)
    task.train(model, splits.pool, labeled, TrainConfig.preset("fast"), torch.Generator().manual_seed(0))
    model.eval()
    return splits, model, task, labeled


def _op_and_v(scope="last", cfg=None):
    splits, model, task, labeled = _softmax_problem()
    engine = InfluenceEngine(model, task, cfg or InfluenceConfig(scope=scope, solver="cg"))
    v = engine.reference_gradient(splits.val, np.arange(len(splits.val)))
    return engine, engine.hessian(splits.pool, labeled), v, splits, labeled


# ------------------------------------------------------------------------------------------- 1. convergence reports
SOLVERS = {
    "lissa": lambda: LiSSA(damping=0.05, scale=10.0, depth=400, repeats=2, batch_size=10_000),
    "lissa-paper": lambda: make_solver(replace(INFLUENCE_PRESETS["paper"], scope="last")),
    "lissa-auto": lambda: AutoLiSSA(damping=0.1, repeats=2),
    "cg": lambda: ConjugateGradient(0.01, 200, 1e-6),
    "exact": lambda: ExactSolver(0.01),
    "identity": lambda: IdentitySolver(),
}
MEASURE = {"lissa": "estimated_error", "lissa-paper": "bias_bound", "lissa-auto": "estimated_error",
           "cg": "relative_residuals", "exact": "final_residual", "identity": "final_residual"}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_reports_a_boolean_converged_and_its_measure(name):
    engine, op, v, _, _ = _op_and_v()
    result = SOLVERS[name]().solve(op, v, torch.Generator().manual_seed(0))
    assert isinstance(result.info["converged"], bool)
    assert MEASURE[name] in result.info
    if name in ("lissa", "lissa-paper", "lissa-auto"):
        assert result.info["relative_step_trace"] and result.info["norm_trace"]
        assert result.info["diverged"] is False
    # the converging ones really did; the paper preset stops at 1 - 0.99^251 = 92 % of its fixed point and says so
    expected = name != "lissa-paper"
    assert result.info["converged"] is expected
    if name == "lissa-paper":
        assert result.info["bias_bound"] == pytest.approx(0.99 ** 251)


def test_lissa_converged_means_close_to_its_fixed_point():
    engine, op, v, _, _ = _op_and_v()
    A = op.dense().double() + 0.5 * torch.eye(len(v), dtype=torch.float64)
    exact = torch.linalg.solve(A, v.double()).float()
    # d·scale = 0.5; full-batch products: deterministic, the a-posteriori bound applies
    def run(depth):
        lissa = LiSSA(damping=0.05, scale=10.0, depth=depth, repeats=1, batch_size=10_000, divide_by_scale=True)
        return lissa.solve(op, v, torch.Generator().manual_seed(0))

    short, long = run(20), run(400)
    assert short.info["converged"] is False and _rel(short.s, exact) > 1e-2
    assert short.info["estimated_error"] >= _rel(short.s, exact)  # the estimate does not flatter the short chain
    assert long.info["converged"] is True and _rel(long.s, exact) < 1e-3


# --------------------------------------------------------------------------------------------- 2. LiSSA divergence
def _too_small_scale(op):
    lam_max = float(torch.linalg.eigvalsh(op.dense().double())[-1])
    return lam_max / 2.05  # the top mode is multiplied by |1 - d - λ_max/scale| ≈ 1.06 per step: growth, not NaN


def test_lissa_growing_beyond_its_fixed_point_raises_naming_step_trace_and_setting():
    engine, op, v, _, _ = _op_and_v()
    scale = _too_small_scale(op)
    lissa = LiSSA(damping=0.01, scale=scale, depth=250, repeats=1, batch_size=10_000)
    with pytest.raises(SolverError) as err:
        lissa.solve(op, v, torch.Generator().manual_seed(0))
    message = str(err.value)
    assert "diverged: at step" in message and "‖h‖/‖v‖ every 25 steps" in message
    assert "raise the scale" in message and "damping" in message
    # influal 0.1 returned this chain without a word, hundreds of times beyond its fixed point's bound ‖v‖/d
    old = _old_lissa(op, v, torch.Generator().manual_seed(0), 0.01, scale, 250, 1, 10_000)
    assert bool(torch.isfinite(old).all()) and float(old.norm() / v.norm()) > 10 * (1 / 0.01)


def test_paper_preset_warns_on_divergence_and_keeps_its_result():
    assert INFLUENCE_PRESETS["paper"].on_divergence == "warn"
    assert InfluenceConfig().on_divergence == "raise"
    engine, op, v, _, _ = _op_and_v()
    scale = _too_small_scale(op)
    cfg = replace(INFLUENCE_PRESETS["paper"], scope="last", scale=scale, lissa_repeats=2, hvp_batch_size=10_000)
    solver = make_solver(cfg)
    assert solver.on_divergence == "warn"
    with pytest.warns(SolverWarning, match="diverged: at step .* the result is kept"):
        result = solver.solve(op, v, torch.Generator().manual_seed(0))
    assert result.info["diverged"] is True and result.info["converged"] is False
    assert result.info["diverged_at"][0] == 0
    old = _old_lissa(op, v, torch.Generator().manual_seed(0), cfg.damping, scale, cfg.lissa_depth, 2, 10_000)
    assert torch.equal(result.s, old)


def test_paper_preset_numbers_are_unchanged_and_not_converged():
    engine, op, v, _, _ = _op_and_v()
    cfg = replace(INFLUENCE_PRESETS["paper"], scope="last")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)  # a sound chain: no warning
        result = make_solver(cfg).solve(op, v, torch.Generator().manual_seed(5))
    old = _old_lissa(op, v, torch.Generator().manual_seed(5), 0.01, 1e4, 250, 4, 1)
    assert torch.equal(result.s, old)
    assert result.info["converged"] is False and result.info["stochastic"] is True
    assert result.info["diverged"] is False and max(result.info["norm_trace"]) <= 1 / 0.01


def test_isal_with_the_paper_preset_warns_and_records_divergence_in_the_round_summary():
    splits, model, task, labeled = _softmax_problem()
    ctx = SelectionContext(model=model, task=task, pool=splits.pool, labeled_ids=labeled,
                           unlabeled_ids=np.arange(60, 100), reference=splits.val,
                           generator=torch.Generator().manual_seed(0))
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="last", solver="cg"))
    scale = _too_small_scale(engine.hessian(splits.pool, labeled))
    strategy = make_strategy("isal", preset="paper", scope="last", scale=scale, lissa_repeats=1,
                             hvp_batch_size=10_000)
    with pytest.warns(SolverWarning, match="diverged"):
        selection = strategy.select(ctx, budget=5)
    assert selection.info["diverged"] is True and selection.info["converged"] is False
    json.dumps(selection.summary(), allow_nan=False)  # state files are strict JSON
    raising = make_strategy("isal", scope="last", solver="lissa", scale=scale, lissa_repeats=1, hvp_batch_size=10_000)
    with pytest.raises(SolverError, match="raise the scale"):
        raising.select(ctx, budget=5)


def test_on_divergence_is_validated():
    with pytest.raises(ConfigError, match="on_divergence"):
        InfluenceConfig(on_divergence="ignore")
    with pytest.raises(ConfigError, match="on_divergence"):
        LiSSA(on_divergence="ignore")
    assert InfluenceConfig.from_dict({"on_divergence": "warn"}).on_divergence == "warn"


# ---------------------------------------------------------------------------------------------- 3. lissa-auto
def test_lissa_auto_draws_minibatches_of_at_least_64_whatever_the_paper_batch_says():
    assert InfluenceConfig().hvp_batch_size == 1  # the paper's LiSSA setting stays
    assert make_solver(InfluenceConfig(solver="lissa-auto")).batch_size == AUTO_MIN_HVP_BATCH == 64
    assert make_solver(InfluenceConfig(solver="lissa-auto", hvp_batch_size=256)).batch_size == 256
    assert make_solver(InfluenceConfig(solver="lissa")).batch_size == 1


def _model(name):
    torch.manual_seed(0)
    if name == "cnn":
        return SmallCNN(3, 1, width=2, hidden=16)
    if name == "resnet18":
        return ResNet18(3, 1, width=2)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # softmax regression


@pytest.fixture(scope="module")
def trained_models():
    splits = blob_splits(pool=44, val=20, test=10, size=4)
    task = ClassificationTask(3)
    labeled = np.arange(24)
    models = {}
    for name in ("cnn", "resnet18", "softmax"):
        model = _model(name)
        task.train(model, splits.pool, labeled, TrainConfig.preset("fast"), torch.Generator().manual_seed(0))
        models[name] = model.eval()
    return splits, task, labeled, models


@pytest.mark.parametrize("scope", ["last", "weights"])
@pytest.mark.parametrize("name", ["cnn", "resnet18", "softmax"])
def test_lissa_auto_defaults_converge_on_the_builtin_models_and_scopes(trained_models, name, scope):
    splits, task, labeled, models = trained_models
    cfg = InfluenceConfig(scope=scope, solver="lissa-auto", lissa_repeats=1)  # the defaults, one chain (fast)
    engine = InfluenceEngine(models[name], task, cfg)
    v = engine.reference_gradient(splits.val, np.arange(len(splits.val)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = engine.solve(v, splits.pool, labeled, torch.Generator().manual_seed(0))
    messages = [str(w.message) for w in caught if issubclass(w.category, SolverWarning)]
    info = result.info
    assert info["converged"] is True and info["diverged"] is False and info["depth_capped"] is False
    assert not any("capped" in m for m in messages)
    # the damping it reports is the one it solved with: raised (and warned about) only for negative curvature
    assert result.effective_damping >= cfg.damping
    assert info["damping_raised"] == any("negative curvature" in m for m in messages)
    if info["damping_raised"]:
        assert info["lambda_min"] < -cfg.damping / 2 and scope == "weights" and name != "softmax"
    reference = ConjugateGradient(result.effective_damping, 500, 1e-8).solve(engine.hessian(splits.pool, labeled), v)
    assert _rel(result.s, reference.s) < 1e-2


def _softmax_510():
    """10 classes on 2×5×5 blobs: a 510-parameter softmax regression, 120 labeled (mini-batches of 64 are random)."""
    full = blobs(220, num_classes=10, size=5, channels=2, seed=3)
    ids = np.arange(len(full))
    splits = DatasetSplits("blobs", pool=full.subset(ids[:160]), val=full.subset(ids[160:200]),
                           test=full.subset(ids[200:]), num_classes=10, in_channels=2, image_size=5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 10))
    task = ClassificationTask(10)
    labeled = np.arange(120)
    task.train(model, splits.pool, labeled, TrainConfig.preset("fast"), torch.Generator().manual_seed(0))
    return splits, model.eval(), task, labeled


def test_lissa_auto_defaults_converge_with_random_minibatches_on_a_510_parameter_softmax_regression():
    splits, model, task, labeled = _softmax_510()
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="all", solver="lissa-auto"))
    assert engine.scope.numel == 510
    v = engine.reference_gradient(splits.val, np.arange(len(splits.val)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        result = engine.solve(v, splits.pool, labeled, torch.Generator().manual_seed(0))
    info = result.info
    assert info["batch_size"] == 64 and info["stochastic"] is True and info["repeats"] == 4
    assert info["converged"] is True and info["chain_std_error"] <= info["noise_tol"]
    reference = ConjugateGradient(0.01, 500, 1e-8).solve(engine.hessian(splits.pool, labeled), v)
    assert _rel(result.s, reference.s) < 0.1
    # influal 0.1's batch of one (hvp_batch_size's default) breaks a chain scaled from the full Hessian: it raises
    # instead of hiding it; the mini-batch probe (the default) scales the chain for such batches
    with pytest.raises(SolverError, match="diverged"):
        AutoLiSSA(0.01, 4, batch_size=1, probe_draws=0).solve(engine.hessian(splits.pool, labeled), v,
                                                              torch.Generator().manual_seed(0))


class _Outliers:
    """H = (1/n) Σ_i a_i a_iᵀ, where 4 of 400 items carry 100x the curvature of the others (a well-fitted network's
    last layer: the few uncertain items dominate): a mini-batch of 64 holding one of them has a Hessian several
    times the full one's."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.rows = torch.randn(400, 20, generator=g, dtype=torch.float64) * 0.1
        self.rows[:4] *= 100.0
        self.n = len(self.rows)

    def full(self, vec):
        return self.rows.T @ (self.rows @ vec) / self.n

    def sample(self, vec, generator, batch_size):
        rows = self.rows[torch.randperm(self.n, generator=generator)[:batch_size]]
        return rows.T @ (rows @ vec) / len(rows)

    def skip_sample(self, generator, batch_size):
        torch.randperm(self.n, generator=generator)


def test_lissa_auto_scales_for_the_largest_minibatch_hessian_not_the_full_one():
    op = _Outliers()
    v = torch.ones(20, dtype=torch.float64)
    eye = torch.eye(20, dtype=torch.float64)
    exact = torch.linalg.solve(op.full(eye) + 0.5 * eye, v)
    with pytest.raises(SolverError, match="diverged"):  # scaled from the full Hessian alone
        AutoLiSSA(0.5, 2, probe_draws=0).solve(op, v, torch.Generator().manual_seed(0))
    result = AutoLiSSA(0.5, 4).solve(op, v, torch.Generator().manual_seed(0))
    info = result.info
    assert info["minibatch_top"] > 2 * info["lambda_max"]  # the probe saw what the full Hessian hides
    assert info["scale"] == pytest.approx(1.5 * (info["minibatch_top"] + 0.5))
    assert info["converged"] is True
    assert info["diverged"] is False
    assert _rel(result.s, exact) < 0.1


def test_lissa_auto_depth_cap_warns_and_is_reported():
    engine, op, v, splits, labeled = _op_and_v()
    with pytest.warns(SolverWarning, match="capped at max_depth = 20"):
        result = AutoLiSSA(0.01, repeats=1, max_depth=20).solve(op, v, torch.Generator().manual_seed(0))
    info = result.info
    assert info["depth_capped"] is True and info["depth"] == 20 and info["required_depth"] > 20
    assert info["converged"] is False


def test_lissa_auto_raises_the_damping_under_negative_curvature_and_says_so():
    A = _spd([-2.0, -0.5, 0.3, 1.0, 4.0, 9.0])
    v = torch.randn(6, generator=torch.Generator().manual_seed(1))
    with pytest.warns(SolverWarning, match="negative curvature"):
        result = AutoLiSSA(0.01, repeats=1, power_iters=10).solve(MatrixOp(A), v, torch.Generator().manual_seed(0))
    assert result.info["damping_raised"] is True and result.info["requested_damping"] == 0.01
    assert result.info["lambda_min"] == pytest.approx(-2.0, abs=1e-3)
    assert result.effective_damping == pytest.approx(0.01 + 4.0, abs=1e-2)
    exact = torch.linalg.solve(A + result.effective_damping * torch.eye(6), v)
    assert result.info["converged"] is True and _rel(result.s, exact) < 1e-3
    with pytest.raises(SolverError, match="negative curvature"):
        AutoLiSSA(0.01, repeats=1, adapt_damping=False).solve(MatrixOp(A), v, torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------------------ 4. CG, v = 0
def test_cg_out_of_iterations_warns_and_the_round_summary_shows_it():
    splits, model, task, labeled = _softmax_problem()
    ctx = SelectionContext(model=model, task=task, pool=splits.pool, labeled_ids=labeled,
                           unlabeled_ids=np.arange(60, 100), reference=splits.val)
    strategy = make_strategy("isal", scope="last", solver="cg", cg_max_iter=2)
    with pytest.warns(SolverWarning, match="cg stopped after 2 iterations"):
        selection = strategy.select(ctx, budget=5)
    assert selection.info["converged"] is False and selection.info["iterations"] == 2
    assert selection.info["final_residual"] > 1e-6
    assert selection.summary()["converged"] is False


def test_a_converged_cg_does_not_warn():
    engine, op, v, _, _ = _op_and_v()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        result = ConjugateGradient(0.01, 500, 1e-6).solve(op, v)
    assert result.info["converged"] is True


ZERO_SOLVERS = {**SOLVERS, "lissa-default": lambda: make_solver(InfluenceConfig(scope="last", solver="lissa")),
                "lissa-auto-default": lambda: make_solver(InfluenceConfig(scope="last", solver="lissa-auto"))}


@pytest.mark.parametrize("name", sorted(ZERO_SOLVERS))
def test_zero_v_gives_zero_s_converged_for_every_solver(name):
    engine, op, v, splits, _ = _op_and_v()
    zero = torch.zeros_like(v)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        result = ZERO_SOLVERS[name]().solve(op, zero, torch.Generator().manual_seed(0))
    assert torch.equal(result.s, zero) and result.info["converged"] is True
    scores = -engine.dots(splits.pool, np.arange(60, 100), result.s)
    assert np.array_equal(scores, np.zeros(40))


# ----------------------------------------------------------------------------------------------------- 5. damping
def test_effective_damping_of_solver_auto_is_not_pretended():
    with pytest.raises(ConfigError, match="resolve_config"):
        InfluenceConfig().effective_damping  # noqa: B018
    assert InfluenceConfig(solver="cg").effective_damping == 0.01
    assert INFLUENCE_PRESETS["paper"].effective_damping == pytest.approx(100.0)
    assert math.isinf(InfluenceConfig(solver="identity").effective_damping)
    task = ClassificationTask(3)
    assert resolve_config(InfluenceConfig(), mlp_model(), task).effective_damping == 0.01  # CG on the last layer
    assert resolve_config(InfluenceConfig(scope="weights"), mlp_model(), task).effective_damping == pytest.approx(100.0)


def test_the_round_summary_reports_the_resolved_damping():
    splits, model, task, labeled = _softmax_problem()
    ctx = SelectionContext(model=model, task=task, pool=splits.pool, labeled_ids=labeled,
                           unlabeled_ids=np.arange(60, 100), reference=splits.val,
                           generator=torch.Generator().manual_seed(0))
    for settings, damping, solver in [({}, 0.01, "cg"), ({"scope": "weights", "lissa_depth": 10}, 100.0, "lissa")]:
        strategy = make_strategy("isal", **settings)  # solver "auto"
        assert InfluenceEngine(model, task, strategy.config).effective_damping == pytest.approx(damping)
        info = strategy.select(ctx, budget=5).info
        assert info["solver"] == solver and info["effective_damping"] == pytest.approx(damping)
        assert isinstance(info["converged"], bool)
