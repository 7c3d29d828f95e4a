"""The detection fast paths: FCOS matching, cached-trunk Hessian products, fused pseudo-boxes, the score floor."""

import numpy as np
import pytest
import torch
from detection_utils import canvas, detector, one_thread

from influal.core.torch_utils import eval_mode
from influal.influence import InfluenceEngine, ParamScope
from influal.influence.hvp import HessianOperator
from influal.settings import InfluenceConfig
from influal.tasks.detection.families.fcos import match_locations
from influal.tasks.detection.gradients import per_image_dot
from influal.tasks.detection.hessian import HeadHessian, head_hessian
from influal.tasks.detection.task import DetectionTask, keep_confident

KINDS = ("fcos", "fasterrcnn")


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return canvas(tmp_path_factory.mktemp("canvas"))


def _ready(kind):
    return DetectionTask(10, batch_size=4).ready(detector(kind))


def torchvision_matches(net, targets, anchors, num_anchors_per_level):
    """The matches torchvision's FCOS.compute_loss hands its head (the head's loss swapped for a recorder)."""
    found = []
    net.head.compute_loss = lambda targets, outputs, anchors, matched: found.append(matched) or {}
    try:
        net.compute_loss(targets, {}, anchors, num_anchors_per_level)
    finally:
        del net.head.compute_loss
    return torch.stack(found[0])


def test_fcos_matching_is_torchvisions(data):
    model = detector("fcos").eval()
    net = model.net
    images, targets = data["pool"].get_batch(list(range(6)))
    crowded = torch.tensor([[x, y, x + w, y + w] for x in (2.0, 9.0, 20.0) for y in (3.0, 15.0)
                            for w in (6.0, 14.0, 30.0)])
    targets[1] = {"boxes": crowded, "labels": torch.arange(len(crowded)) % 10 + 1}  # overlapping boxes of all sizes
    targets[2] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with torch.no_grad():
        image_list, targets = net.transform(images, targets)
        feats = list(net.backbone(image_list.tensors).values())
        anchors = net.anchor_generator(image_list, feats)
    per_level = [f.size(2) * f.size(3) for f in feats]
    expected = torchvision_matches(net, targets, anchors, per_level)
    got = match_locations(torch.stack(anchors), [t["boxes"] for t in targets], per_level, net.center_sampling_radius)
    assert torch.equal(got, expected)
    assert (expected[1] >= 0).sum() > 10 and (expected[2] == -1).all()
    assert len(set(expected[1][expected[1] >= 0].tolist())) > 3  # several boxes of the crowded image won locations


@pytest.mark.parametrize("kind", KINDS)
def test_split_and_join_give_back_the_batch_losses(data, kind):
    model = _ready(kind)
    adapter = model.adapter
    images, targets = data["pool"].get_batch([0, 1, 2, 3])
    targets[2] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with torch.no_grad():
        trunk = adapter.trunk(images, targets)
        weights = adapter.current_weights(detach=True)
        whole = adapter.image_losses(trunk, adapter.pre_activations(trunk, weights))
        pieces = adapter.split(trunk)
        singles = torch.cat([adapter.image_losses(t, adapter.pre_activations(t, weights)) for t in pieces])
        rejoined = adapter.join([pieces[3], pieces[0], pieces[2]])
        some = adapter.image_losses(rejoined, adapter.pre_activations(rejoined, weights))
    assert len(pieces) == 4
    assert torch.allclose(singles, whole, rtol=1e-5)
    assert torch.allclose(some, whole[[3, 0, 2]], rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_trunk_products_equal_double_backward_through_the_detector(data, kind):
    model = _ready(kind)
    task = DetectionTask(10, batch_size=4)
    ids = np.arange(7)
    scope = ParamScope(model, "weights")
    with eval_mode(model):
        cached = head_hessian(model, task, data["pool"], ids, scope, batch_size=3)
        generic = HessianOperator(model, task, data["pool"], ids, scope, batch_size=3)
        assert isinstance(cached, HeadHessian) and cached.n == 7
        v = torch.randn(scope.numel, generator=torch.Generator().manual_seed(0))
        full, expected = cached.full(v), generic.full(v)
        assert torch.allclose(full, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
        drawn = cached.sample(v, torch.Generator().manual_seed(5), 4)
        same_draw = generic.sample(v, torch.Generator().manual_seed(5), 4)
        assert torch.allclose(drawn, same_draw, rtol=1e-4, atol=1e-5 * float(same_draw.abs().max()))
        assert not torch.allclose(drawn, full, rtol=1e-2)  # a mini-batch is not the whole set


def test_cached_dense_hessian_equals_the_generic_one(data):
    model = _ready("fcos")
    task = DetectionTask(10, batch_size=4)
    layer = "net.head.regression_head.bbox_ctrness"
    scope = ParamScope(model, [f"{layer}.weight", f"{layer}.bias"])
    with eval_mode(model):
        cached = head_hessian(model, task, data["pool"], np.arange(5), scope, batch_size=2).dense(chunk=100)
        generic = HessianOperator(model, task, data["pool"], np.arange(5), scope, batch_size=2).dense(chunk=100)
    assert cached.shape == (289, 289)
    assert torch.allclose(cached, generic, rtol=1e-4, atol=1e-5 * float(generic.abs().max()))


def test_engine_uses_the_cache_and_falls_back_when_it_would_not_fit(data):
    model = _ready("fcos")
    task = DetectionTask(10, batch_size=4)
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="weights", solver="lissa", batch_size=4))
    assert isinstance(engine.hessian(data["pool"], np.arange(6)), HeadHessian)
    scope = ParamScope(model, "weights")
    with eval_mode(model):
        assert head_hessian(model, task, data["pool"], np.arange(6), scope, batch_size=4, limit=1000) is None
        beyond = ParamScope(model, ["net.head.classification_head.conv.0.weight"])
        assert head_hessian(model, task, data["pool"], np.arange(6), beyond, batch_size=4) is None
    towers = InfluenceEngine(model, task, InfluenceConfig(solver="lissa"),
                             scope=["net.head.classification_head.conv.0.weight"])
    assert isinstance(towers.hessian(data["pool"], np.arange(6)), HessianOperator)


@pytest.mark.parametrize("kind", KINDS)
def test_detections_at_a_score_floor_are_the_confident_part_of_all_detections(data, kind):
    model = detector(kind).eval()  # untrained: many low-scoring boxes, so the floor drops most of them
    images, _ = data["pool"].get_batch(list(range(4)))
    before = model.adapter.score_floor
    everything = model.detect(images)
    scores = torch.cat([d["scores"] for d in everything])
    floor = float(torch.quantile(scores, 0.7))
    floored = model.detect(images, min_score=floor)
    assert model.detect(images)[0]["scores"].shape == everything[0]["scores"].shape  # the threshold is restored
    assert before == model.adapter.score_floor
    for d, f in zip(everything, floored):
        kept = keep_confident(d, floor)
        assert torch.equal(kept["boxes"], f["boxes"]) and torch.equal(kept["labels"], f["labels"])
        assert torch.equal(kept["scores"], f["scores"])


@pytest.mark.parametrize("kind", KINDS)
def test_fused_pseudo_boxes_score_as_detect_then_trunk(data, kind):
    model = _ready(kind)
    images, _ = data["pool"].get_batch(list(range(5)))
    scores = torch.cat([d["scores"] for d in model.detect(images)])
    task = DetectionTask(10, batch_size=4, score_threshold=float(torch.quantile(scores, 0.9)))  # some boxes kept
    scope = ParamScope(model, "weights")
    s = torch.randn(scope.numel, generator=torch.Generator().manual_seed(2))
    hooks = task.influence_hooks()
    assert hooks.fuses_pseudo_targets
    pseudo = task.pseudo_targets(model, images)
    with torch.no_grad():
        _, fused_targets = model.adapter.pseudo_trunk(images, task.score_threshold, hooks._keep)
    for a, b in zip(pseudo, fused_targets):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    assert sum(len(p["boxes"]) for p in pseudo) > 0
    fused = hooks.per_sample_dot(model, images, None, scope, s, "auto")
    two_pass = per_image_dot(model, images, pseudo, scope, s)
    assert torch.allclose(fused, two_pass, rtol=1e-5, atol=1e-7)
