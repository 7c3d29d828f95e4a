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
