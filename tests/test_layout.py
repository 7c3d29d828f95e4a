"""Channels-last scoring passes: values untouched, strides restored, scores equal to the as-built layout."""

import numpy as np
import pytest
import torch
from conftest import blobs

from influal.core.errors import ConfigError
from influal.influence import InfluenceEngine
from influal.influence.layout import channels_last, wants_channels_last
from influal.settings import InfluenceConfig
from influal.tasks.classification import ClassificationTask
from influal.tasks.classification.models import SmallCNN


def _cnn():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, in_channels=1)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 12, 12))
    return model.eval()


def _snapshot(model):
    return {n: (p, p.detach().clone(), p.stride()) for n, p in model.named_parameters()}


def test_channels_last_restrides_every_conv_weight_and_restores_it_exactly():
    model = _cnn()
    before = _snapshot(model)
    with channels_last(model):
        first = model.features[0][0].weight  # 1 input channel: ambiguous strides, still re-strided
        assert first.stride() != before["features.0.0.weight"][2]
        assert model.features[1][0].weight.is_contiguous(memory_format=torch.channels_last)
        assert model(torch.randn(2, 1, 12, 12)).shape == (2, 4)
    for name, p in model.named_parameters():
        param, values, stride = before[name]
        assert p is param and p.stride() == stride and torch.equal(p.detach(), values)


def test_channels_last_restores_on_error_and_nests():
    model = _cnn()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with channels_last(model):
            with channels_last(model):
                pass
            assert model.features[1][0].weight.is_contiguous(memory_format=torch.channels_last)
            raise RuntimeError("boom")
    assert all(p.stride() == before[n][2] for n, p in model.named_parameters())


def test_auto_layout_is_for_cpu_classifiers_with_convolutions():
    prefers = ClassificationTask(4).influence_hooks().prefers_channels_last
    assert prefers
    assert wants_channels_last(_cnn(), "auto", prefers)
    assert not wants_channels_last(_cnn(), "preserve", prefers)
    assert not wants_channels_last(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), "auto", prefers)
    assert not wants_channels_last(_cnn(), "auto", False)  # a task whose hooks do not ask for it (detection)
    assert wants_channels_last(_cnn(), "channels_last", False)
    with pytest.raises(ConfigError, match="memory_format"):
        wants_channels_last(_cnn(), "nhwc", prefers)
    with pytest.raises(ConfigError, match="memory_format"):
        InfluenceConfig(memory_format="nhwc")


@pytest.mark.parametrize("scope", ["last", "weights"])
def test_engine_scores_and_v_agree_across_layouts_and_leave_the_model_as_it_was(scope):
    model = _cnn()
    before = _snapshot(model)
    task = ClassificationTask(4)
    data = blobs(40, num_classes=4, size=12, seed=3)
    ids = np.arange(40)
    out, seen = {}, []
    hook = model.features[1][0].register_forward_hook(
        lambda _m, _i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    for fmt in ("auto", "preserve"):
        engine = InfluenceEngine(model, task, InfluenceConfig(scope=scope, solver="identity", batch_size=16,
                                                              memory_format=fmt))
        v = engine.reference_gradient(data, ids)
        out[fmt] = (v, engine.dots(data, ids, v))
        assert seen and all(seen) == (fmt == "auto")  # the passes ran in the layout asked for
        seen.clear()
    hook.remove()
    assert torch.allclose(out["auto"][0], out["preserve"][0], rtol=1e-5, atol=1e-6)
    a, b = out["auto"][1], out["preserve"][1]
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5
    assert all(p.stride() == before[n][2] and torch.equal(p.detach(), before[n][1])
               for n, p in model.named_parameters())
