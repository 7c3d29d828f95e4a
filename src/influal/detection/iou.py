"""Intersection over union of axis-aligned boxes, done right.

Conventions: boxes are ``[x1, y1, x2, y2]`` in continuous pixel coordinates (no "+1"), with ``x1 <= x2`` and
``y1 <= y2``. COCO boxes ``[x, y, w, h]`` convert with :func:`xywh_to_xyxy`.

The official ISAL localization-stability code mapped ``xywh`` to ``(x, y - h, x + w, y)``, mirroring each box
about its top edge, and added 1 to float widths (spec §9.6); its IoU is wrong whenever two boxes have
different heights. Here the IoU of a box with itself is exactly 1 and of disjoint boxes exactly 0.
"""

from __future__ import annotations

import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]``."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[x1, y1, x2, y2]`` -> COCO ``[x, y, w, h]``."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``[n, 4]`` xyxy boxes (0 for degenerate ones)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``[len(a), len(b)]`` of two sets of xyxy boxes; 0 where the union is empty."""
    a = torch.as_tensor(a, dtype=torch.float32).reshape(-1, 4)
    b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4).to(a.device)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def max_iou(reference: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """For every reference box, the largest IoU with any candidate box (0 if there are no candidates)."""
    reference = torch.as_tensor(reference, dtype=torch.float32).reshape(-1, 4)
    if len(reference) == 0 or len(torch.as_tensor(candidates).reshape(-1, 4)) == 0:
        return torch.zeros(len(reference))
    return pairwise_iou(reference, candidates).max(dim=1).values
