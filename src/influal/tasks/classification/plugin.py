"""The classification task plug-in: what the loop, the CLI and the report need from this folder."""

from __future__ import annotations

import hashlib

import numpy as np

from ...api import DatasetSplits, TaskPlugin
from ...core.errors import DataError
from .datasets import DATASETS, ImageFileDataset, TensorImageDataset, labels_of
from .models import MODELS
from .settings import ClassificationSettings
from .task import ClassificationTask


class ClassificationPlugin(TaskPlugin):
    name = "classification"
    settings_class = ClassificationSettings
    metric = "accuracy"
    cost_unit = "labels"
    metric_scale = 100.0
    default_dataset = "mnist5k"
    default_model = "cnn"
    task_class = ClassificationTask
    default_train_preset = "demo"

    def datasets(self):
        return DATASETS

    def models(self):
        return MODELS

    def check_splits(self, splits: DatasetSplits) -> list[str]:
        """Labels out of range are errors; a reference set that misses classes, and test images identical to
        pool images, are warnings."""
        out = []
        labels = {part: labels_of(getattr(splits, part)) for part in ("pool", "val", "test")}
        for part, values in labels.items():
            if len(values) and (values.min() < 0 or values.max() >= splits.num_classes):
                raise DataError(f"the {part} split has labels {int(values.min())}..{int(values.max())}; a "
                                f"{splits.num_classes}-class task needs 0..{splits.num_classes - 1}")
        if len(np.unique(labels["pool"])) < 2:
            raise DataError(f"the pool of {splits.name} holds a single class; classification needs at least two")
        missing = sorted(set(range(splits.num_classes)) - set(np.unique(labels["val"]).tolist()))
        if missing:
            out.append(f"the reference (val) split has no item of class(es) {', '.join(map(str, missing[:10]))}"
                       + (" ..." if len(missing) > 10 else "") + "; ISAL's reference loss does not measure them")
        shared = _shared_images(splits.pool, splits.test)
        if shared:
            out.append(f"{shared} test image(s) are identical to pool images; the test metric is then optimistic")
        return out

    def labeling(self):
        from .labeling import ClassificationLabels

        return ClassificationLabels()

    def build_task(self, config, splits: DatasetSplits, device) -> ClassificationTask:
        settings = config.task_settings
        return ClassificationTask(splits.num_classes, device, config.eval_batch_size,
                                  label_smoothing=settings.label_smoothing)


def _shared_images(pool, test) -> int:
    """How many test images are byte-identical to a pool image (in-memory image data sets; for image files, the
    same file or a file of the same bytes)."""
    if isinstance(pool, ImageFileDataset) and isinstance(test, ImageFileDataset):
        return _shared_files(pool, test)
    if not isinstance(pool, TensorImageDataset) or not isinstance(test, TensorImageDataset):
        return 0
    def digests(ds):
        flat = ds.images.reshape(len(ds.images), -1).contiguous().numpy()
        return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat}
    seen = digests(pool)
    flat = test.images.reshape(len(test.images), -1).contiguous().numpy()
    return sum(hashlib.blake2b(row.tobytes(), digest_size=16).digest() in seen for row in flat)


def _shared_files(pool, test) -> int:
    """Test files whose bytes equal a pool file's: sizes first, so only files of a size both sides have are read."""
    import os

    def sizes(ds):
        out: dict[int, list] = {}
        for path in ds.paths:
            out.setdefault(os.stat(ds.root / path).st_size, []).append(ds.root / path)
        return out

    pool_sizes, test_sizes = sizes(pool), sizes(test)

    def digest(path):
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()

    count = 0
    for size in set(pool_sizes) & set(test_sizes):
        seen = {digest(p) for p in pool_sizes[size]}
        count += sum(digest(p) in seen for p in test_sizes[size])
    return count


PLUGIN = ClassificationPlugin()
