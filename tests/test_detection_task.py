"""The detection task: pseudo-boxes, the heads' gradient scope, per-image losses and per-image g·s."""

import numpy as np
import pytest
import torch
from detection_utils import canvas, detector, one_thread

from influal.api import Task
from influal.influence import InfluenceEngine, ParamScope
from influal.influence.grads import gs_loop
from influal.settings import InfluenceConfig, TrainConfig
from influal.tasks.detection.gradients import per_image_dot
from influal.tasks.detection.task import DetectionTask, keep_confident

KINDS = ("fcos", "fasterrcnn")
PAPER_SCOPE = {
    "fcos": ["net.head.classification_head.cls_logits.weight", "net.head.regression_head.bbox_reg.weight",
             "net.head.regression_head.bbox_ctrness.weight"],
    "fasterrcnn": ["net.rpn.head.cls_logits.weight", "net.rpn.head.bbox_pred.weight",
                   "net.roi_heads.box_predictor.cls_score.weight", "net.roi_heads.box_predictor.bbox_pred.weight"],
}


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return canvas(tmp_path_factory.mktemp("canvas"))


def _batch(data, ids=(0, 1, 2), empty=2):
    images, targets = data["pool"].get_batch(list(ids))
    if empty is not None:  # an image whose (pseudo) target holds no box
        targets[empty] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return images, targets


def test_pseudo_targets_keep_detections_at_or_above_the_threshold():
    detections = [{"boxes": torch.tensor([[0., 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]]),
                   "scores": torch.tensor([0.5, 0.1, 0.0999]), "labels": torch.tensor([3, 4, 5])},
                  {"boxes": torch.tensor([[0., 0, 4, 4]]), "scores": torch.tensor([0.05]), "labels": torch.tensor([1])}]
    task = DetectionTask(10, score_threshold=0.1)
    assert isinstance(task, Task)
    pseudo = task.pseudo_targets(lambda images: detections, [torch.zeros(3, 8, 8)] * 2)
    assert pseudo[0]["labels"].tolist() == [3, 4]  # 0.1 itself is kept, 0.0999 is not
    assert pseudo[0]["boxes"].tolist() == [[0, 0, 4, 4], [1, 1, 5, 5]]
    assert len(pseudo[1]["boxes"]) == 0 and pseudo[1]["boxes"].shape == (0, 4)
    assert keep_confident(detections[0], 0.5)["scores"].tolist() == [0.5]
    with pytest.raises(ValueError):
        DetectionTask(10, score_threshold=1.5)


def test_pseudo_targets_of_a_detector_are_its_own_detections(data):
    model = detector("fcos").eval()
    images, _ = _batch(data, empty=None)
    detections = model(images)
    everything = DetectionTask(10, score_threshold=0.0).pseudo_targets(model, images)
    nothing = DetectionTask(10, score_threshold=1.0).pseudo_targets(model, images)
    for d, p, q in zip(detections, everything, nothing):
        assert torch.equal(d["boxes"], p["boxes"]) and torch.equal(d["labels"], p["labels"])
        assert len(q["boxes"]) == int((d["scores"] >= 1.0).sum())


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_heads_final_layers_get_gradients(data, kind):
    model = detector(kind).eval().freeze_for_influence()
    task = DetectionTask(10)
    images, targets = _batch(data)
    task.loss(model, images, targets).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == set(model.final_parameter_names(biases=True))
    assert ParamScope(model, "weights").names == PAPER_SCOPE[kind]  # the paper's P, in its order
    model.restore_trainable()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scope_name", ["weights", "all"])
def test_per_image_dot_equals_a_batch_size_one_loop(data, kind, scope_name):
    model = detector(kind).eval().freeze_for_influence()
    task = DetectionTask(10)
    images, targets = _batch(data)
    scope = ParamScope(model, scope_name)
    s = torch.randn(scope.numel, generator=torch.Generator().manual_seed(1))
    fast = task.influence_hooks().per_sample_dot(model, images, targets, scope, s, "jvp")
    loop = gs_loop(model, task, images, targets, scope, s)
    assert fast.shape == (3,) and torch.isfinite(fast).all() and fast.abs().min() > 0
    assert torch.allclose(fast, loop, rtol=1e-4, atol=1e-6 * float(loop.abs().max()))
    assert task.influence_hooks().per_sample_dot(model, images, targets, scope, s, "loop") is None  # the reference path stays generic


def test_per_image_dot_declines_scopes_beyond_the_final_layers(data):
    model = detector("fcos").eval()
    images, targets = _batch(data)
    scope = ParamScope(model, ["net.head.classification_head.conv"])
    assert per_image_dot(model, images, targets, scope, torch.zeros(scope.numel)) is None


def test_fcos_per_image_loss_is_torchvisions_training_loss_of_that_image(data):
    model = detector("fcos")
    task = DetectionTask(10)
    images, targets = _batch(data, empty=None)
    model.net.train()  # the tiny backbone has GroupNorm only: train and eval mode compute the same function
    with torch.no_grad():
        expected = [float(sum(model.net([im], [t]).values())) for im, t in zip(images, targets)]
        model.net.eval()
        got = task.loss(model, images, targets)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_per_image_losses_do_not_depend_on_the_batch_or_the_global_rng(data, kind):
    model = detector(kind).eval()
    task = DetectionTask(10)
    images, targets = _batch(data)
    with torch.no_grad():
        torch.manual_seed(123)
        batched = task.loss(model, images, targets)
        torch.manual_seed(456)
        single = torch.cat([task.loss(model, [im], [t]) for im, t in zip(images, targets)])
    assert torch.allclose(batched, single, rtol=1e-5)


def test_influence_engine_scores_detector_images_with_the_fast_path(data):
    model = detector("fcos").eval().freeze_for_influence()
    task = DetectionTask(10, batch_size=4)
    engine = InfluenceEngine(model, task, InfluenceConfig(scope="weights", solver="identity", batch_size=4))
    v = engine.reference_gradient(data["val"], np.arange(len(data["val"])))
    brute = torch.zeros_like(v)
    for i in range(len(data["val"])):
        im, t = data["val"].get_batch([i])
        brute += engine.scope.grad(task.loss(model, im, t).sum())
    # float32 sums of a padded batch against one image at a time: entries near zero differ by rounding, which
    # depends on the CPU's kernels (failed on an AMD EPYC at atol 1e-7), so the floor is relative to v's scale
    assert torch.allclose(v, brute, rtol=1e-4, atol=1e-5 * float(brute.abs().max()))
    ids = np.arange(5)
    dots = engine.dots(data["pool"], ids, v, targets="true")
    loop = engine.dots(data["pool"], ids, v, targets="true", method="loop")
    assert np.allclose(dots, loop, rtol=1e-4, atol=1e-6 * np.abs(loop).max())
    result = engine.run(data["pool"], np.arange(4), np.arange(4, 12), data["val"], np.arange(4),
                        torch.Generator().manual_seed(0))
    assert len(result.scores) == 8 and np.isfinite(result.scores).all()


def test_training_lowers_the_loss_and_leaves_only_the_final_layers_trainable(data):
    model = detector("fcos")
    task = DetectionTask(10)
    ids = np.arange(len(data["pool"]))
    images, targets = data["pool"].get_batch(ids)
    with torch.no_grad():
        before = float(task.loss(model.eval(), images, targets).mean())
    cfg = TrainConfig(epochs=4, lr=0.01, batch_size=4, milestones=(), weight_decay=1e-4, grad_clip=10.0)
    task.train(model, data["pool"], ids, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = float(task.loss(model, images, targets).mean())
    assert after < 0.8 * before
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(model.final_parameter_names())
    assert not model.training
    assert task.cost(data["pool"], ids) == data["pool"].num_boxes(ids) > len(ids) - 1


def test_weights_load_from_a_local_file_only_where_shapes_fit(tmp_path):
    from influal.core.errors import ConfigError, DataError
    from influal.tasks.detection.models import build_detector

    source = detector("fcos", seed=1, num_classes=10)
    path = tmp_path / "fcos.pth"
    torch.save(source.net.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_detector("fcos", 5, min_size=48, weights=str(path))  # 5 classes: cls_logits does not fit
    src, dst = source.net.state_dict(), loaded.net.state_dict()
    assert torch.equal(src["backbone.stem.0.0.weight"], dst["backbone.stem.0.0.weight"])
    assert torch.equal(src["head.regression_head.bbox_reg.weight"], dst["head.regression_head.bbox_reg.weight"])
    assert dst["head.classification_head.cls_logits.weight"].shape[0] == 6
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "resnet.pth")
    with pytest.raises(ConfigError, match="not a ResNet"):
        build_detector("fcos", 5, min_size=48, weights=str(tmp_path / "resnet.pth"))
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="neither"):
        build_detector("fcos", 5, min_size=48, weights=str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_detector("fcos", 5, min_size=48, weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("kind", KINDS)
def test_resnet50_fpn_builds_and_takes_imagenet_backbone_weights(tmp_path, kind):
    from torchvision.ops.misc import FrozenBatchNorm2d

    from influal.tasks.detection.models import build_detector

    conv1 = torch.randn(64, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    torch.save({"conv1.weight": conv1, "layer1.0.conv1.weight": torch.ones(64, 64, 1, 1), "fc.weight": torch.ones(1)},
               tmp_path / "resnet50.pth")
    model = build_detector(kind, 20, backbone="resnet50-fpn", weights=str(tmp_path / "resnet50.pth"), min_size=320,
                           max_size=480)
    body = model.net.backbone.body
    assert torch.equal(body.conv1.weight, conv1) and isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer4[0].conv1.weight.requires_grad  # the last three stages train
    assert model.net.transform.min_size == (320,) and model.net.transform.max_size == 480
    shapes = [model.get_submodule(name).weight.shape[0] for name in model.final_layers]
    assert shapes == ([21, 4, 1] if kind == "fcos" else [3, 12, 21, 84])
