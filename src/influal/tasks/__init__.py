"""Tasks: the adapters between models, data and the task-agnostic strategies."""

from .base import Task
from .classification import ClassificationTask

__all__ = ["ClassificationTask", "Task"]
