"""Box conventions and the IoU localization stability needs, on torchvision's own box operations.

Boxes are ``[x1, y1, x2, y2]`` in continuous pixel coordinates (no "+1"), with ``x1 <= x2`` and ``y1 <= y2``;
COCO boxes ``[x, y, w, h]`` convert with :func:`xywh_to_xyxy`. The IoU is ``torchvision.ops.box_iou``, with 0
(not NaN) where two degenerate boxes have no union.

The official ISAL localization-stability code mapped ``xywh`` to ``(x, y - h, x + w, y)``, mirroring each box
about its top edge, and added 1 to float widths (spec §9.6); its IoU is wrong whenever two boxes have
different heights. Here the IoU of a box with itself is exactly 1 and of disjoint boxes exactly 0.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, box_iou


def xywh_to_xyxy(boxes) -> torch.Tensor:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]``."""
    return box_convert(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy")


def xyxy_to_xywh(boxes) -> torch.Tensor:
    """``[x1, y1, x2, y2]`` -> COCO ``[x, y, w, h]``."""
    return box_convert(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "xyxy", "xywh")


def pairwise_iou(a, b) -> torch.Tensor:
    """IoU matrix ``[len(a), len(b)]`` of two sets of xyxy boxes; 0 where the union is empty."""
    a = torch.as_tensor(a, dtype=torch.float32).reshape(-1, 4)
    b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4).to(a.device)
    return box_iou(a, b).nan_to_num_(0.0)


def max_iou(reference, candidates) -> torch.Tensor:
    """For every reference box, the largest IoU with any candidate box (0 if there are no candidates)."""
    reference = torch.as_tensor(reference, dtype=torch.float32).reshape(-1, 4)
    candidates = torch.as_tensor(candidates, dtype=torch.float32).reshape(-1, 4)
    if len(reference) == 0 or len(candidates) == 0:
        return torch.zeros(len(reference))
    return pairwise_iou(reference, candidates).max(dim=1).values
