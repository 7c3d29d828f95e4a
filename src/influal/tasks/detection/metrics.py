"""COCO box AP (AP@[.5:.95], AP50, AP75) through faster-coco-eval, or pycocotools when that is absent."""

from __future__ import annotations

import contextlib
import io

from ...core.errors import ConfigError

METRICS = ("AP", "AP50", "AP75")


def _backend():
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, lambda gt, dt: COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
    except ImportError:
        pass
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, lambda gt, dt: COCOeval(gt, dt, "bbox")
    except ImportError:
        raise ConfigError("COCO AP needs faster-coco-eval (pip install 'influal[detection]') or pycocotools") from None


def coco_ap(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
    """AP, AP50 and AP75 (0..1) of ``detections`` against a COCO ground-truth dict.

    ``detections`` are COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``. With no
    detection, or no non-crowd ground-truth box, every AP is 0.
    """
    if not detections or not any(not a.get("iscrowd", 0) for a in ground_truth.get("annotations", [])):
        return {name: 0.0 for name in METRICS}
    coco_cls, make_eval = _backend()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = {"info": {}, **ground_truth}
        gt.createIndex()
        dt = gt.loadRes([dict(d) for d in detections])
        evaluator = make_eval(gt, dt)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(0.0, float(v)) for v in evaluator.stats[:3]]  # -1 means "no ground truth": report 0
    return dict(zip(METRICS, stats))
