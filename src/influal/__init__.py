"""influal: active learning with Influence Selection (ISAL, Liu et al., ICCV 2021) and its baselines."""

from .config import INFLUENCE_PRESETS, TRAIN_PRESETS, ExperimentConfig, InfluenceConfig, TrainConfig
from .data import DatasetSplits, TensorImageDataset, load_dataset
from .errors import ConfigError, DataError, InflualError, SolverError, StateError
from .influence import InfluenceEngine
from .loop import Experiment, run_experiment
from .runtime import tune_allocator
from .state import ActiveState
from .strategies import Selection, SelectionContext, make_strategy
from .tasks import ClassificationTask

__version__ = "0.1.0"

__all__ = ["INFLUENCE_PRESETS", "TRAIN_PRESETS", "ActiveState", "ClassificationTask", "ConfigError", "DataError",
           "DatasetSplits", "Experiment", "ExperimentConfig", "InflualError", "InfluenceConfig", "InfluenceEngine",
           "Selection", "SelectionContext", "SolverError", "StateError", "TensorImageDataset", "TrainConfig",
           "load_dataset", "make_strategy", "run_experiment", "tune_allocator"]
