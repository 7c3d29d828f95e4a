"""K-FAC / EK-FAC: factors and eigenvalues against brute-force per-item gradients, the closed-form solve against a
dense Cholesky solve, the sampled Fisher against the exact Hessian where K-FAC is exact, and the engine path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import blob_splits, trained_blob_classifier
from torch import nn

from influal.core.errors import ConfigError
from influal.influence import HessianOperator, ParamScope
from influal.influence.engine import InfluenceEngine
from influal.influence.kfac import KroneckerCurvature, layer_blocks
from influal.influence.solvers import KroneckerSolver
from influal.settings import InfluenceConfig, TrainConfig
from influal.tasks.classification import ClassificationTask, SmallCNN


class _ConvNet(nn.Module):
    """conv (padding 1: several positions per item) -> in-place ReLU -> linear -> in-place ReLU -> linear."""

    def __init__(self, size: int = 6, classes: int = 3, kernel: int = 3, padding: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, kernel, padding=padding)
        out = size + 2 * padding - kernel + 1
        self.fc = nn.Linear(2 * out * out, 5)
        self.head = nn.Linear(5, classes)

    def forward(self, x):
        h = F.relu(self.conv(x), inplace=True).flatten(1)
        return self.head(F.relu(self.fc(h), inplace=True))


def _per_item_grads(model, scope, x, y):
    """Brute force: each item's flat gradient of its own loss, one autograd call per item."""
    rows = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        rows.append(scope.grad(loss))
    return torch.stack(rows)


def _block_dense(curv, p):
    basis = torch.eye(p, dtype=torch.float64)
    return torch.stack([curv.product(e) for e in basis], 1)


def _float64(model):
    return model.double().eval()


class _Tensors:
    """A float64 data set in influal's get_batch form."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def get_batch(self, ids):
        ids = torch.as_tensor(np.asarray(ids))
        return self.x[ids], self.y[ids]


def _blob_data(n, size=6):
    x, y = blob_splits(pool=n, val=4, test=4, size=size).pool.get_batch(np.arange(n))
    return _Tensors(x.double(), y)


@pytest.mark.parametrize("eigen_correction", [False, True])
def test_one_item_with_one_position_per_layer_is_its_gradients_outer_product_per_layer(eigen_correction):
    # one item, and a convolution whose kernel covers the whole input (one output position): every layer's
    # (E)K-FAC block is then exactly g gᵀ restricted to the layer; this fixes the Kronecker orientation, the bias
    # column and the flattening order against brute force.
    model = _float64(_ConvNet(size=4, kernel=4, padding=0))
    task = ClassificationTask(3)
    ds = _blob_data(1, size=4)
    scope = ParamScope(model, "all")
    curv = KroneckerCurvature(model, task, scope, None, eigen_correction=eigen_correction)
    curv.fit(ds, np.arange(1), 8, torch.Generator().manual_seed(0))
    x, y = ds.get_batch(np.arange(1))
    g = _per_item_grads(model, scope, x, y)[0]
    dense = _block_dense(curv, scope.numel)
    starts = np.cumsum([0] + scope.sizes)
    expected = torch.zeros_like(dense)
    for lo, hi in [(starts[0], starts[2]), (starts[2], starts[4]), (starts[4], starts[6])]:  # weight+bias per layer
        expected[lo:hi, lo:hi] = torch.outer(g[lo:hi], g[lo:hi])
    assert torch.allclose(dense, expected, atol=1e-10, rtol=1e-8)
    assert curv.fisher == "empirical"


def test_ekfac_eigenvalues_are_the_second_moments_of_brute_force_gradients_in_the_kronecker_basis():
    model = _float64(_ConvNet())
    task = ClassificationTask(3)
    ds = _blob_data(24)
    scope = ParamScope(model, "all")
    curv = KroneckerCurvature(model, task, scope, None, eigen_correction=True)
    curv.fit(ds, np.arange(24), 7, torch.Generator().manual_seed(0))  # several batches, the last one short
    x, y = ds.get_batch(np.arange(24))
    grads = _per_item_grads(model, scope, x, y)
    for block in curv.blocks:
        mats = torch.stack([block.matrix(list(scope.unflatten(g))) for g in grads])  # [items, out, in]
        rotated = block.qg.T @ mats @ block.qa
        assert torch.allclose(block.eig, rotated.square().mean(0), atol=1e-12, rtol=1e-8)
    # and the factors' bases diagonalise the brute-force K-FAC factors of the fully connected layer
    fc = next(b for b in curv.blocks if b.module is model.fc)
    h = F.relu(model.conv(x)).flatten(1)
    a = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
    A = a.T @ a / len(a)
    off = fc.qa.T @ A @ fc.qa
    assert torch.allclose(off - torch.diag(torch.diagonal(off)), torch.zeros_like(off), atol=1e-9)


@pytest.mark.parametrize("eigen_correction", [False, True])
def test_closed_form_solve_matches_a_dense_solve_of_its_own_curvature(eigen_correction):
    model = _float64(_ConvNet())
    task = ClassificationTask(3)
    ds = _blob_data(16)
    scope = ParamScope(model, "weights")  # weights only: blocks without the bias column
    curv = KroneckerCurvature(model, task, scope, task.influence_hooks(), eigen_correction=eigen_correction)
    curv.fit(ds, np.arange(16), 16, torch.Generator().manual_seed(0))
    assert curv.fisher == "sampled"
    C = _block_dense(curv, scope.numel)
    assert torch.allclose(C, C.T, atol=1e-12)
    assert float(torch.linalg.eigvalsh(C)[0]) > -1e-10
    v = torch.randn(scope.numel, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam = 0.03
    expected = torch.linalg.solve(C + lam * torch.eye(scope.numel, dtype=C.dtype), v)
    assert torch.allclose(curv.solve(v, lam), expected, atol=1e-9, rtol=1e-7)
    result = KroneckerSolver(lam, eigen_correction).solve(curv, v)
    assert result.info["converged"] and result.info["final_residual"] < 1e-10
    assert result.info["approximate_curvature"] and result.info["curvature"] == ("ekfac" if eigen_correction else
                                                                                 "kfac")


def test_sampled_fisher_of_identical_items_approaches_the_exact_hessian():
    # softmax regression on 3000 copies of one image: H = (diag(p) - ppᵀ) ⊗ x̃x̃ᵀ exactly, and K-FAC's
    # factors are x̃x̃ᵀ and the sampled E[ggᵀ] -> diag(p) - ppᵀ (Monte-Carlo error ~ 1/sqrt(3000))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 4)).double().eval()
    images = torch.randn(1, 1, 3, 3, dtype=torch.float64).repeat(3000, 1, 1, 1)
    ds = _Tensors(images, torch.zeros(3000, dtype=torch.long))
    task = ClassificationTask(4)
    scope = ParamScope(model, "all")
    curv = KroneckerCurvature(model, task, scope, task.influence_hooks(), eigen_correction=False)
    curv.fit(ds, np.arange(3000), 500, torch.Generator().manual_seed(0))
    H = HessianOperator(model, task, ds, np.arange(3000), scope, batch_size=1000).dense()
    # scope order is (weight, bias); K-FAC's block is [out, in + 1]: compare via products
    C = _block_dense(curv, scope.numel)
    err = float((C - H).norm() / H.norm())
    assert err < 0.08, err
    # and with the empirical Fisher (true label 0 for all) it is far off: the sampling is what makes it right
    emp = KroneckerCurvature(model, task, scope, None, eigen_correction=False)
    emp.fit(ds, np.arange(3000), 500, torch.Generator().manual_seed(0))
    assert float((_block_dense(emp, scope.numel) - H).norm() / H.norm()) > 3 * err


def test_scope_with_parameters_kfac_has_no_factors_for_fails_when_the_engine_is_built():
    task, model, splits = trained_blob_classifier(pool=40, labeled=20, seed=0)
    with pytest.raises(ConfigError, match="nn.Linear or nn.Conv2d"):
        InfluenceEngine(model, task, InfluenceConfig(scope="all", solver="ekfac"))  # BatchNorm's weights
    assert len(layer_blocks(model, ParamScope(model, "weights"))) == 4
    with pytest.raises(ConfigError, match="damping above 0"):
        KroneckerSolver(0.0)


def test_engine_scores_the_weights_with_ekfac_fitted_on_the_labeled_set():
    torch.manual_seed(0)
    splits = blob_splits(pool=80, val=20, test=4, size=8, seed=1)
    task = ClassificationTask(3, eval_batch_size=16)
    model = SmallCNN(3, 1, width=4, hidden=16)
    task.train(model, splits.pool, np.arange(40), TrainConfig(epochs=5, lr=0.05, batch_size=8, milestones=()),
               torch.Generator().manual_seed(0))
    model.eval()
    labeled, pool_ids, ref = np.arange(40), np.arange(40, 80), np.arange(len(splits.val))
    for solver in ("ekfac", "kfac"):
        cfg = InfluenceConfig(scope="last", solver=solver, damping=0.1)
        engine = InfluenceEngine(model, task, cfg)
        r = engine.run(splits.pool, labeled, pool_ids, splits.val, ref, torch.Generator().manual_seed(0))
        assert r.scores.shape == (40,) and np.isfinite(r.scores).all() and np.ptp(r.scores) > 0
        summary = r.summary()
        assert summary["solver"] == solver and summary["converged"] and summary["effective_damping"] == 0.1
        assert r.solve.info["fisher"] == "sampled" and r.solve.info["layers"] == 1
        # the same curvature fitted by hand on the labeled items (same draws) gives the same s
        curv = KroneckerCurvature(model, task, engine.scope, task.influence_hooks(),
                                  eigen_correction=solver == "ekfac")
        curv.fit(splits.pool, labeled, cfg.batch_size, torch.Generator().manual_seed(0))
        v = engine.reference_gradient(splits.val, ref)
        assert torch.allclose(r.solve.s, curv.solve(v, 0.1), rtol=1e-5, atol=1e-7)
        assert np.allclose(r.scores, -engine.dots(splits.pool, pool_ids, r.solve.s), rtol=1e-5, atol=1e-6)
    # deterministic: the same generator seed gives the same s, on a whole network's weights too
    runs = [InfluenceEngine(model, task, InfluenceConfig(scope="weights", solver="ekfac", damping=0.1)).run(
        splits.pool, labeled, pool_ids, splits.val, ref, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(runs[0].solve.s, runs[1].solve.s) and runs[0].solve.info["layers"] == 4


def test_a_task_whose_loss_applies_its_layers_functionally_is_refused_before_any_pass():
    # the detection task's losses run the head's final layers as F.conv2d / F.linear on a cached trunk: module
    # hooks would see nothing, so the engine refuses at construction (strategy.check, before round 0)
    from detection_utils import detector, one_thread

    from influal.tasks.detection import DetectionTask

    with one_thread():
        task = DetectionTask(10, batch_size=4)
        model = task.ready(detector("fcos"))
        with pytest.raises(ConfigError, match="solver cg, lissa or lissa-auto"):
            InfluenceEngine(model, task, InfluenceConfig(scope="weights", solver="ekfac"))
