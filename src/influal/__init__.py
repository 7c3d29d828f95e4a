"""influal: active learning with Influence Selection (ISAL, Liu et al., ICCV 2021) and its baselines.

The package's public face. Layers, lowest first (checked by import-linter, see docs/architecture.md): ``core``
-> ``settings`` -> ``api`` -> ``influence`` | ``training`` -> ``strategies`` -> ``tasks`` -> ``loop`` -> ``report``
-> ``app`` | ``bench`` -> ``cli``.
"""

from .api import DatasetSplits, InfluenceHooks, Selection, SelectionContext, Strategy, Task, TaskPlugin, check_selection
from .app.run import run_experiment
from .core.errors import ConfigError, DataError, InflualError, SolverError, StateError, TrainingDiverged
from .core.runtime import tune_allocator
from .influence import InfluenceEngine
from .loop.config import ExperimentConfig
from .loop.experiment import Experiment
from .loop.state import ActiveState
from .settings import INFLUENCE_PRESETS, TRAIN_PRESETS, InfluenceConfig, TrainConfig
from .strategies import STRATEGIES, make_strategy, register_strategy
from .tasks import TASKS, get_task, register_task
from .tasks.classification import ClassificationTask, TensorImageDataset

__version__ = "0.2.0"

__all__ = ["INFLUENCE_PRESETS", "STRATEGIES", "TASKS", "TRAIN_PRESETS", "ActiveState", "ClassificationTask",
           "ConfigError", "DataError", "DatasetSplits", "Experiment", "ExperimentConfig", "InflualError",
           "InfluenceConfig", "InfluenceEngine", "InfluenceHooks", "Selection", "SelectionContext", "SolverError",
           "StateError", "Strategy", "Task", "TaskPlugin", "TensorImageDataset", "TrainConfig", "TrainingDiverged",
           "check_selection", "get_task", "make_strategy", "register_strategy", "register_task", "run_experiment",
           "tune_allocator"]
