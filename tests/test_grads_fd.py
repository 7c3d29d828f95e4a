"""Central differences along s (``gs_method="fd"``): two forward passes against the exact batch-size-1 loop."""

import numpy as np
import pytest
import torch
from conftest import blobs
from test_grads import _model, _rel_err

from influal.influence import InfluenceEngine, ParamScope, grads, per_sample_dot, reference_gradient
from influal.influence.grads import gs_fd, gs_loop, perturbed_params
from influal.influence.layout import channels_last
from influal.settings import InfluenceConfig
from influal.tasks.classification import ClassificationTask


def _direction(model, task, scope):
    """A direction like ISAL's s: a reference set's summed gradient (a random direction is nearly orthogonal to
    every per-sample gradient, so the float32 rounding of θ ± h s would dominate g·s)."""
    data = blobs(24, num_classes=4, size=12, seed=9)
    return reference_gradient(model, task, [(None, *data.get_batch(np.arange(24)))], scope)


@pytest.mark.parametrize("model_name", ["cnn", "resnet"])
@pytest.mark.parametrize("scope_name", ["last", "weights"])
def test_fd_matches_the_loop_to_its_truncation_error(model_name, scope_name):
    model = _model(model_name)
    task = ClassificationTask(4)
    hooks = task.influence_hooks()
    scope = ParamScope(model, scope_name, hooks)
    x, _ = blobs(8, num_classes=4, size=12, seed=1).get_batch(np.arange(8))
    s = _direction(model, task, scope)
    pseudo = model(x).argmax(1)
    loop = gs_loop(model, task, x, pseudo, scope, s).numpy()
    fused = per_sample_dot(model, task, x, None, scope, s, "fd", hooks).numpy()  # pseudo-labels from z₊, z₋
    generic = gs_fd(model, task, x, pseudo, scope, s).numpy()  # the task-agnostic form, on the losses
    assert fused.shape == generic.shape == (8,)
    # float32 rounding of θ ± h s and of the two passes, and the ReLU / max-pool kinks the step crosses: 1e-3 to 1e-2
    # on these small random models (the layerwise path is exact to 1e-5)
    assert _rel_err(fused, loop) < 2e-2
    assert _rel_err(generic, loop) < 2e-2
    grads.release_perturbed()


def test_fd_converges_like_h_squared_on_a_smooth_float64_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 4)).double().eval()
    task = ClassificationTask(4)
    hooks = task.influence_hooks()
    scope = ParamScope(model, "weights")
    x, _ = blobs(6, num_classes=4, size=6, seed=2).get_batch(np.arange(6))
    x = x.double()
    s = torch.randn(scope.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pseudo = model(x).argmax(1)
    loop = gs_loop(model, task, x, pseudo, scope, s).numpy()
    errors = []
    for step in (1e-2, 1e-3):
        errors.append(_rel_err(gs_fd(model, task, x, pseudo, scope, s, step).numpy(), loop))
        grads.release_perturbed()
    assert errors[1] < errors[0] / 50  # second order: 10x smaller step, ~100x smaller error
    assert _rel_err(per_sample_dot(model, task, x, None, scope, s, "fd", hooks).numpy(), loop) < 1e-7
    grads.release_perturbed()


def test_perturbed_params_keep_the_layout_and_are_rebuilt_when_anything_changes():
    model = _model("cnn")
    scope = ParamScope(model, "weights")
    s = torch.randn(scope.numel, generator=torch.Generator().manual_seed(0))
    theta = torch.cat([p.detach().flatten() for p in scope.params])
    plus, minus, h = perturbed_params(model, scope, s)
    assert h == pytest.approx(grads.FD_STEP * float(theta.norm()) / float(s.norm()), rel=1e-6)
    name = scope.names[0]
    # θ ± h s in float32 carry the direction to about 2^-8 of each weight's size
    step = (plus[name] - minus[name]) / (2 * h)
    assert float((step - scope.as_dict(s)[name]).norm() / scope.as_dict(s)[name].norm()) < 0.05
    assert perturbed_params(model, scope, s)[0] is plus  # the same pass: kept
    s.mul_(2.0)  # s changed in place
    again = perturbed_params(model, scope, s)
    assert again[0] is not plus and again[2] == pytest.approx(h / 2)
    with channels_last(model):  # re-strided parameters: new storage, rebuilt with their strides
        laid = perturbed_params(model, scope, s)
        for n, p in zip(scope.names, scope.params):
            assert laid[0][n].stride() == p.stride()
    with torch.no_grad():
        scope.params[0].add_(1.0)  # an optimizer step
    assert perturbed_params(model, scope, s)[0] is not laid[0]
    grads.release_perturbed()
    assert grads._perturbed_cache == {}


def test_engine_fd_ranks_like_layerwise_and_keeps_nothing_after_its_pass():
    model = _model("resnet")
    task = ClassificationTask(4)
    data = blobs(40, num_classes=4, size=12, seed=3)
    ids = np.arange(40)
    s = _direction(model, task, ParamScope(model, "weights"))
    scores = {}
    for method in ("layerwise", "fd"):
        engine = InfluenceEngine(model, task, InfluenceConfig(scope="weights", gs_method=method, batch_size=16))
        assert engine.method == method
        scores[method] = engine.dots(data, ids, s)
    assert grads._perturbed_cache == {}
    assert _rel_err(scores["fd"], scores["layerwise"]) < 2e-2
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(rank(scores["fd"]), rank(scores["layerwise"]))[0, 1] > 0.99



def test_fd_benchmarks_overlap_counts_the_shared_lowest_scores():
    from benchmarks.fd_scoring import overlap

    a = np.array([0.1, -2.0, 3.0, -1.0, 0.0])
    b = np.array([-5.0, -4.0, 1.0, 2.0, 3.0])  # lowest two: items 0, 1; a's: items 1, 3
    assert overlap(a, b, 2) == 0.5
    assert overlap(a, a, 3) == 1.0
