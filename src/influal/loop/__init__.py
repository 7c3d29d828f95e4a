"""The task-blind experiment: its config, presets, per-(strategy, seed) state, and the round loop with resume."""

from .config import ExperimentConfig
from .experiment import Experiment, initial_labeled, state_path
from .presets import PRESETS, get_preset
from .state import ActiveState, RoundRecord

__all__ = ["PRESETS", "ActiveState", "Experiment", "ExperimentConfig", "RoundRecord", "get_preset",
           "initial_labeled", "state_path"]
