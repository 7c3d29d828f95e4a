"""Batched per-sample g·s (closed form, forward-mode JVP, vmap) against a batch-size-1 autograd loop."""

import numpy as np
import pytest
import torch
from conftest import blobs

from influal.core.errors import ConfigError
from influal.influence import InfluenceEngine, ParamScope, per_sample_dot, reference_gradient
from influal.influence.grads import choose_method, gs_jvp, gs_layerwise, gs_loop, layerwise_modules
from influal.settings import InfluenceConfig
from influal.tasks.classification import ClassificationTask
from influal.tasks.classification.models import ResNet18, SmallCNN


def _model(name):
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, in_channels=1) if name == "cnn" else ResNet18(4, 1, maxpool=True, width=8)
    # non-trivial BatchNorm statistics, then eval mode (as the engine runs)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 12, 12))
    return model.eval()


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("model_name", ["cnn", "resnet"])
@pytest.mark.parametrize("scope_name,method", [("last", "closed"), ("last", "jvp"), ("last", "vmap"),
                                               ("last", "layerwise"), ("weights", "jvp"), ("weights", "vmap"),
                                               ("weights", "layerwise")])
def test_batched_dots_match_loop(model_name, scope_name, method):
    model = _model(model_name)
    task = ClassificationTask(4)
    hooks = task.influence_hooks()
    scope = ParamScope(model, scope_name, hooks)
    data = blobs(6, num_classes=4, size=12, seed=1)
    x, y = data.get_batch(np.arange(6))
    s = torch.randn(scope.numel, generator=torch.Generator().manual_seed(5))
    fast = per_sample_dot(model, task, x, y, scope, s, method, hooks).numpy()
    loop = gs_loop(model, task, x, y, scope, s).numpy()
    assert fast.shape == (6,)
    assert _rel_err(fast, loop) < 1e-5


@pytest.mark.parametrize("scope_name", ["last", "weights"])
def test_generic_loss_jvp_and_fused_pseudo_labels_match_loop(scope_name):
    model = _model("resnet")
    task = ClassificationTask(4)
    hooks = task.influence_hooks()
    scope = ParamScope(model, scope_name, hooks)
    x, _ = blobs(5, num_classes=4, size=12, seed=4).get_batch(np.arange(5))
    s = torch.randn(scope.numel, generator=torch.Generator().manual_seed(6))
    pseudo = model(x).argmax(1)
    loop = gs_loop(model, task, x, pseudo, scope, s).numpy()
    assert _rel_err(gs_jvp(model, task, x, pseudo, scope, s).numpy(), loop) < 1e-5  # task-agnostic JVP
    assert _rel_err(gs_layerwise(model, task, x, pseudo, scope, s).numpy(), loop) < 1e-5
    for method in ("jvp", "layerwise", "loop") + (("closed",) if scope_name == "last" else ()):
        fused = per_sample_dot(model, task, x, None, scope, s, method, hooks).numpy()  # y=None: pseudo-labels
        assert _rel_err(fused, loop) < 1e-5


def test_auto_method_picks_closed_form_for_last_and_jvp_otherwise():
    model = _model("cnn")
    task = ClassificationTask(4)
    hooks = task.influence_hooks()
    assert choose_method("auto", model, task, ParamScope(model, "last", hooks), hooks) == "closed"
    assert choose_method("auto", model, task, ParamScope(model, "weights"), hooks) == "layerwise"
    assert choose_method("auto", model, task, ParamScope(model, "all"), hooks) == "jvp"  # BatchNorm parameters
    with pytest.raises(ConfigError, match="'closed' needs a task that offers"):
        choose_method("closed", model, task, ParamScope(model, "weights"), hooks)
    with pytest.raises(ConfigError, match="scope 'last' means a task's final layer"):
        ParamScope(model, "last")  # without a task's hooks, "last" means nothing
    assert layerwise_modules(model, ParamScope(model, "all")) is None


def test_layerwise_survives_inplace_activations_and_shared_layers():
    torch.manual_seed(0)
    shared = torch.nn.Linear(6, 6)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 6), torch.nn.ReLU(inplace=True), shared,
                                torch.nn.ReLU(inplace=True), shared, torch.nn.Linear(6, 4)).eval()
    task = ClassificationTask(4)
    scope = ParamScope(model, "all")  # weights and biases of Linear layers only; `shared` is called twice
    x, y = blobs(5, num_classes=4, size=6, seed=5).get_batch(np.arange(5))
    s = torch.randn(scope.numel, generator=torch.Generator().manual_seed(8))
    assert _rel_err(gs_layerwise(model, task, x, y, scope, s).numpy(), gs_loop(model, task, x, y, scope, s).numpy()) < 1e-5


def test_weights_scope_is_every_tensor_with_more_than_one_dimension():
    model = ResNet18(10, 3)
    scope = ParamScope(model, "weights")
    # the official code's P: 20 conv weights + linear.weight, no BatchNorm, no linear.bias
    assert len(scope.names) == 21
    assert scope.numel == 11_164_352
    assert "linear.weight" in scope.names and "linear.bias" not in scope.names


def test_reference_gradient_is_sum_of_per_sample_gradients():
    model = _model("cnn")
    task = ClassificationTask(4)
    scope = ParamScope(model, "weights")
    data = blobs(10, num_classes=4, size=12, seed=2)
    v = reference_gradient(model, task, task.batches(data, np.arange(10), 4), scope)
    expected = torch.zeros(scope.numel)
    for i in range(10):
        x, y = data.get_batch([i])
        expected += scope.grad(task.loss(model, x, y).sum())
    assert torch.allclose(v, expected, rtol=1e-4, atol=1e-6)


def test_engine_scores_use_pseudo_labels_and_negative_sign():
    model = _model("cnn")
    task = ClassificationTask(4)
    data = blobs(8, num_classes=4, size=12, seed=3)
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="last", batch_size=3))
    s = torch.randn(engine.scope.numel, generator=torch.Generator().manual_seed(0))
    dots = engine.dots(data, np.arange(8), s)
    x, _ = data.get_batch(np.arange(8))
    pseudo = model(x).argmax(1)
    expected = gs_loop(model, task, x, pseudo, engine.scope, s).numpy()
    assert _rel_err(dots, expected) < 1e-5


def test_auto_settings_resolve_to_cg_on_the_last_layer_of_a_classifier_else_lissa_on_weights():
    from influal.influence.engine import resolve_config

    model = _model("cnn")
    task = ClassificationTask(4)
    resolved = resolve_config(InfluenceConfig(), model, task)
    assert (resolved.scope, resolved.solver) == ("last", "cg")
    assert resolve_config(InfluenceConfig(scope="weights"), model, task).solver == "lissa"
    assert resolve_config(InfluenceConfig(solver="exact"), model, task).solver == "exact"
    no_linear = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    resolved = resolve_config(InfluenceConfig(), no_linear, task)
    assert (resolved.scope, resolved.solver) == ("weights", "lissa")


class SmoothedTask(ClassificationTask):
    """Label smoothing through the built-in setting."""

    def __init__(self, num_classes):
        super().__init__(num_classes, label_smoothing=0.1)


class FocalTask(ClassificationTask):
    """A custom loss on the logits (focal loss, γ = 2): the hooks must differentiate it by autograd."""

    def logit_loss(self, logits, targets):
        logp = torch.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        return -((1 - logp.exp()) ** 2) * logp


class OwnLossTask(ClassificationTask):
    """Overrides `loss` itself: the hooks cannot know it, so the engine must take its generic paths."""

    def loss(self, model, inputs, targets):
        return super().loss(model, inputs, targets) * 3.0 + model(inputs).pow(2).mean(1)


@pytest.mark.parametrize("task_cls", [SmoothedTask, FocalTask, OwnLossTask])
@pytest.mark.parametrize("scope_name", ["last", "weights"])
def test_engine_honours_the_tasks_own_loss(task_cls, scope_name):
    """g·s of a label-smoothed, a focal and a self-defined loss against the batch-size-1 loop of the task's loss;
    before the hooks asked the task, label smoothing 0.1 was silently scored with plain cross-entropy."""
    model = _model("cnn")
    task = task_cls(4)
    hooks = task.influence_hooks()
    if task_cls is OwnLossTask:
        assert hooks is None
        if scope_name == "last":
            return
    data = blobs(7, num_classes=4, size=12, seed=9)
    engine = InfluenceEngine(model, task, InfluenceConfig(scope=scope_name, batch_size=4))
    s = torch.randn(engine.scope.numel, generator=torch.Generator().manual_seed(2))
    x, y = data.get_batch(np.arange(7))
    pseudo = model(x).argmax(1)
    loop = gs_loop(model, task, x, pseudo, engine.scope, s).numpy()
    assert _rel_err(engine.dots(data, np.arange(7), s), loop) < 1e-5  # the auto method, pseudo-labels fused
    for method in ("jvp", "layerwise") + (("closed",) if scope_name == "last" else ()):
        assert _rel_err(engine.dots(data, np.arange(7), s, method=method), loop) < 1e-5, method
    plain = ClassificationTask(4)
    plain_dots = InfluenceEngine(model, plain, InfluenceConfig(scope=scope_name, batch_size=4)).dots(
        data, np.arange(7), s)
    assert _rel_err(plain_dots, loop) > 1e-3  # the losses really differ: plain cross-entropy would be wrong


@pytest.mark.parametrize("task_cls", [SmoothedTask, FocalTask])
def test_last_layer_hessian_honours_the_tasks_own_loss(task_cls):
    """The cached last-layer Hessian against the double-backward Hessian of the task's own loss."""
    from influal.influence.hvp import HessianOperator

    model = _model("cnn")
    task = task_cls(4)
    hooks = task.influence_hooks()
    scope = ParamScope(model, "last", hooks)
    data = blobs(9, num_classes=4, size=12, seed=11)
    ids = np.arange(9)
    cached = hooks.hessian(model, data, ids, scope, 4)
    generic = HessianOperator(model, task, data, ids, scope, 4)
    v = torch.randn(scope.numel, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(cached.full(v), generic.full(v), rtol=1e-4, atol=1e-6)
    assert hooks.convex_scope(model, scope) == (task_cls is SmoothedTask)  # a custom loss is not assumed convex
