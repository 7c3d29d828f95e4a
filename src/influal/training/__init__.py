"""Training: one seeded SGD loop for every task, and batched image augmentations."""

from .augment import augment
from .sgd import LossHook, train_sgd

__all__ = ["LossHook", "augment", "train_sgd"]
