"""IoU against hand-computed cases (including the boxes the official code got wrong) and localization stability."""

import pytest
import torch
from torchvision.ops import box_iou

from influal.tasks.detection.boxes import max_iou, pairwise_iou, xywh_to_xyxy, xyxy_to_xywh
from influal.tasks.detection.strategies import stability


def test_iou_hand_computed_cases():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    cases = {
        (0.0, 0.0, 2.0, 2.0): 1.0,            # identical
        (1.0, 1.0, 3.0, 3.0): 1.0 / 7.0,      # overlap 1, union 4 + 4 - 1
        (2.0, 0.0, 4.0, 2.0): 0.0,            # touching edges
        (5.0, 5.0, 6.0, 6.0): 0.0,            # disjoint
        (0.0, 0.0, 2.0, 1.0): 0.5,            # same top edge, half the height: area 2 inside 4
        (0.0, 1.0, 2.0, 4.0): 2.0 / 8.0,      # different heights, overlap rows 1..2: 2 / (4 + 6 - 2)
        (0.5, 0.5, 1.5, 1.5): 0.25,           # contained
    }
    b = torch.tensor(list(cases))
    got = pairwise_iou(a, b)[0]
    assert torch.allclose(got, torch.tensor(list(cases.values())), atol=1e-7)


def test_iou_of_boxes_with_different_heights_is_symmetric_and_not_the_mirrored_one():
    # The official code turned xywh into (x, y - h, x + w, y), mirroring each box about its top edge: box a
    # (rows 0..3) becomes rows -3..0 and box b (rows 2..3, inside a) becomes rows 1..2, so it reports IoU 0
    # where the true IoU is 1 x 1 / (1 x 3).
    a = xywh_to_xyxy(torch.tensor([[0.0, 0.0, 1.0, 3.0]]))
    b = xywh_to_xyxy(torch.tensor([[0.0, 2.0, 1.0, 1.0]]))  # rows 2..3: inside a
    assert pairwise_iou(a, b).item() == pytest.approx(1.0 / 3.0)
    assert pairwise_iou(b, a).item() == pytest.approx(1.0 / 3.0)
    mirrored_a = torch.tensor([[0.0, -3.0, 1.0, 0.0]])
    mirrored_b = torch.tensor([[0.0, 1.0, 1.0, 2.0]])
    assert pairwise_iou(mirrored_a, mirrored_b).item() == 0.0  # what the bug would report


def test_iou_matches_torchvision_on_random_boxes_and_handles_empty_sets():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(30, 2, generator=g) * 20 + 0.1], dim=1)
    assert torch.allclose(pairwise_iou(boxes[:12], boxes[12:]), box_iou(boxes[:12], boxes[12:]), atol=1e-6)
    assert torch.allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes, atol=1e-5)
    assert max_iou(boxes[:3], torch.zeros(0, 4)).tolist() == [0.0, 0.0, 0.0]
    assert len(max_iou(torch.zeros(0, 4), boxes)) == 0
    assert max_iou(boxes[:2], boxes).tolist() == pytest.approx([1.0, 1.0])


def test_localization_stability_is_the_score_weighted_mean_of_max_ious():
    ref = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 12.0]]), "scores": torch.tensor([0.8, 0.2])}
    level1 = {"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0], [10.0, 10.0, 12.0, 12.0]]), "scores": torch.tensor([.9, .9])}
    level2 = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}  # nothing detected: contributes 0
    expected = (0.8 * (1 / 7 + 0) / 2 + 0.2 * (1 + 0) / 2) / 1.0
    assert stability(ref, [level1, level2]) == pytest.approx(expected)
    # a score threshold drops the weak reference box
    assert stability(ref, [level1, level2], score_threshold=0.5) == pytest.approx((1 / 7) / 2)
    # no reference box: nothing to be unstable about
    assert stability({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}, [level1]) == 1.0
