"""Detector families, found by name in :data:`FAMILIES` (``--model`` for ``--task detection``): one file each.

A family file defines its :class:`~.base.HeadAdapter` (the trunk / final-layer split ISAL differentiates) and a
builder of its torchvision model, and registers a :class:`~.base.DetectorFamily`. A new family is one new file
plus its line below (or an ``influal.detector_families`` entry point from outside).
"""

from __future__ import annotations

from ....core.registry import Registry
from .base import DetectorFamily, HeadAdapter

FAMILIES: Registry[DetectorFamily] = Registry("detector family", entry_point_group="influal.detector_families",
                                              lazy={"fcos": "influal.tasks.detection.families.fcos",
                                                    "fasterrcnn": "influal.tasks.detection.families.fasterrcnn"})

__all__ = ["FAMILIES", "DetectorFamily", "HeadAdapter"]
