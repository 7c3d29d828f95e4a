"""COCO AP on hand-made cases with known answers, box counting, and the AP @ boxes report."""

import pytest

from influal.tasks.detection.metrics import coco_ap
from influal.tasks.detection.report import box_table_markdown, boxes_saved, boxes_to_reach

GT = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                      {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0}],
      "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def det(image, box, score, cat=1):
    return {"image_id": image, "category_id": cat, "bbox": box, "score": score}


def test_perfect_detections_score_one():
    assert coco_ap(GT, [det(1, [10, 10, 20, 20], 0.9), det(2, [50, 50, 20, 20], 0.8)]) == \
        pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})


def test_a_false_positive_between_two_hits_gives_the_101_point_interpolated_ap():
    # ranked: hit (P=1, R=.5), false positive (P=.5), hit (P=2/3, R=1): interpolated precision is 1 for
    # recall <= .5 (51 of the 101 points) and 2/3 above (50 points), at every IoU threshold.
    dets = [det(1, [10, 10, 20, 20], 0.9), det(1, [70, 70, 10, 10], 0.8), det(2, [50, 50, 20, 20], 0.7)]
    expected = (51 * 1.0 + 50 * 2.0 / 3.0) / 101
    assert coco_ap(GT, dets) == pytest.approx({"AP": expected, "AP50": expected, "AP75": expected}, abs=1e-6)


def test_a_loose_box_counts_at_iou_50_but_not_at_75():
    # image 2's box is shifted by 5 px: IoU = 15*20 / (400 + 400 - 300) = 0.6, a hit at 0.50..0.60 only
    dets = [det(1, [10, 10, 20, 20], 0.9), det(2, [55, 50, 20, 20], 0.8)]
    ap = coco_ap(GT, dets)
    assert ap["AP50"] == pytest.approx(1.0)
    # at 0.75 only the first (higher-scored) box hits: recall reaches .5 with precision 1
    assert ap["AP75"] == pytest.approx(51 / 101, abs=1e-6)
    # AP over the ten thresholds .50:.05:.95: thresholds .50, .55, .60 give 1, the other seven 51/101
    assert ap["AP"] == pytest.approx((3 * 1.0 + 7 * 51 / 101) / 10, abs=1e-6)


def test_wrong_class_and_no_detection_score_zero():
    assert coco_ap(GT, [det(1, [10, 10, 20, 20], 0.9, cat=2)])["AP"] == 0.0
    assert coco_ap(GT, []) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_boxes_saved_at_equal_ap_against_random_by_interpolation():
    summary = {
        "random": [{"round": r, "cost": c, "mean": m, "std": 0.0} for r, (c, m) in enumerate([(100, .1), (200, .2),
                                                                                              (300, .3)])],
        "isal": [{"round": r, "cost": c, "mean": m, "std": 0.0} for r, (c, m) in enumerate([(100, .1), (150, .25),
                                                                                            (260, .4)])],
    }
    assert boxes_to_reach([(100, .1), (200, .2), (300, .3)], .25) == pytest.approx(250)
    saved = boxes_saved(summary)["isal"]
    assert saved[0]["saved"] == pytest.approx(0.0)
    assert saved[1]["baseline_boxes"] == pytest.approx(250) and saved[1]["saved"] == pytest.approx(100)
    assert saved[1]["saved_pct"] == pytest.approx(40.0)
    assert saved[2]["baseline_boxes"] is None and saved[2]["saved"] is None  # random never reaches .4
    table = box_table_markdown(summary)
    assert "| isal | AP | 0.100 ± 0.000 | 0.250 ± 0.000 | 0.400 ± 0.000 |" in table
    assert "| | 10k × AP / boxes | 10.0000 | 16.6667 | 15.3846 |" in table
