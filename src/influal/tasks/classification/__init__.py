"""Image classification: the task, its influence hooks (closed form and last-layer Hessian honouring the task's
own loss), its models, data-set formats, settings block and plug-in."""

from .. import register_task
from .datasets import DATASETS, ImageFileDataset, TensorImageDataset, labels_of, stratified_split
from .heads import forward_with_features, last_linear
from .models import MODELS, ResNet18, SmallCNN, build_model
from .plugin import PLUGIN, ClassificationPlugin
from .settings import ClassificationSettings
from .task import ClassificationTask

register_task(PLUGIN)

__all__ = ["DATASETS", "MODELS", "PLUGIN", "ClassificationPlugin", "ClassificationSettings", "ClassificationTask",
           "ImageFileDataset", "ResNet18", "SmallCNN", "TensorImageDataset", "build_model", "forward_with_features",
           "labels_of", "last_linear", "stratified_split"]
