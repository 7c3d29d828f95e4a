"""The classification block of an experiment's settings (``task_settings`` in config.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...core.errors import ConfigError
from ...settings import Settings, check_positive, setting


@dataclass(frozen=True)
class ClassificationSettings(Settings):
    """``label_smoothing``: the cross-entropy's label smoothing ε (0 = plain cross-entropy); ISAL's influence
    hooks differentiate the smoothed loss exactly."""

    _section: ClassVar[str] = "classification"

    label_smoothing: float = setting(0.0, help="label smoothing of the cross-entropy (0..1)")

    def __post_init__(self) -> None:
        check_positive("classification.label_smoothing", self.label_smoothing, allow_zero=True)
        if self.label_smoothing >= 1.0:
            raise ConfigError(f"classification.label_smoothing must lie in [0, 1), got {self.label_smoothing}")
