"""The detection block of an experiment's settings (``task_settings`` in config.json).

The detector family is the experiment's ``model`` (``--model fcos|fasterrcnn``); the SGD recipe, its warm-up and
clipping are the experiment's ``train`` block; stopping at a target AP is the experiment's ``stop_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...core.errors import ConfigError
from ...settings import Settings, check_choice, check_int, setting
from .backbones import BACKBONES


@dataclass(frozen=True)
class DetectionSettings(Settings):
    """``score_threshold`` turns the detector's post-NMS detections into pseudo-boxes (the paper's command: 0.1).
    ``image_size`` is the digit-canvas size; the detector resizes images to ``min_size``/``max_size`` (default:
    ``image_size``, so small images are not blown up to 800 px). ``weights`` is a local file only.

    ``images`` / ``annotations`` (``--dataset coco`` only, instead of ``--data-root``): the pool's COCO json and the
    folder its ``file_name`` entries are relative to; ``test_annotations`` (its images under ``test_images``,
    default ``images``) is the test set, else one is held out of the pool; ``val_annotations`` (its images under
    ``images``) is the reference set, else one is held out of the pool. These five are left out of config.json
    (and so of the experiment's id) while unset, so folders written before they existed still resume.
    """

    _section: ClassVar[str] = "detection"

    backbone: str = setting("tiny", help="detector backbone: tiny (trains on CPU) or resnet50-fpn", choices=BACKBONES)
    weights: str | None = setting(None, help="local .pth for the detector or its ResNet-50 backbone (never "
                                  "downloaded)")
    score_threshold: float = setting(0.1, help="pseudo-box score threshold (the paper's 0.1)")
    image_size: int = setting(128, help="digit-canvas image size in pixels")
    min_size: int | None = setting(None, help="detector resize min_size (default: the image size)")
    max_size: int | None = setting(None, help="detector resize max_size (default: min_size)")
    pool_size: int = setting(1000, help="digit-canvas pool images")
    min_digits: int = setting(1, cli=False)
    max_digits: int = setting(4, help="digits per canvas, at most")
    batch_size: int = setting(16, cli=False)
    images: str | None = setting(None, help="coco: folder the pool json's file_name entries are relative to (with "
                                 "--annotations, instead of --data-root)")
    annotations: str | None = setting(None, help="coco: the pool's COCO json (with --images)")
    test_images: str | None = setting(None, help="coco: folder of the test json's images (default: --images)")
    test_annotations: str | None = setting(None, help="coco: the test set's COCO json (default: a test set held out "
                                           "of the pool)")
    val_annotations: str | None = setting(None, help="coco: the reference set's COCO json, images under --images "
                                          "(default: held out of the pool)")

    _UNSET_OMITTED: ClassVar[tuple[str, ...]] = ("images", "annotations", "test_images", "test_annotations",
                                                 "val_annotations")

    def __post_init__(self) -> None:
        check_choice("detection.backbone", self.backbone, BACKBONES)
        if not isinstance(self.score_threshold, (int, float)) or not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"detection.score_threshold must lie in [0, 1], got {self.score_threshold!r}")
        for name in ("image_size", "pool_size", "min_digits", "max_digits", "batch_size"):
            check_int(f"detection.{name}", getattr(self, name))
        if self.image_size < 32:
            raise ConfigError(f"detection.image_size must be >= 32 pixels, got {self.image_size}")
        if self.min_digits > self.max_digits:
            raise ConfigError(f"detection.min_digits ({self.min_digits}) exceeds max_digits ({self.max_digits})")
        for name in ("min_size", "max_size"):
            check_int(f"detection.{name}", getattr(self, name), minimum=32, optional=True)
        for name in self._UNSET_OMITTED:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"detection.{name} must be a path (text) or null, got {value!r}")

    def to_dict(self) -> dict:
        """As :meth:`Settings.to_dict`, without the COCO paths that are unset (config.json and the experiment id
        of a run without them stay as they were before these settings existed)."""
        out = super().to_dict()
        for name in self._UNSET_OMITTED:
            if out.get(name) is None:
                out.pop(name, None)
        return out
