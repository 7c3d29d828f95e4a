"""Detection data-set formats, found by name in :data:`DATASETS` (``--dataset``): loader(config) -> splits.

- ``digit-canvas``: generated offline (see :mod:`.canvas`) into ``--data-root`` or, by default, under
  ``$INFLUAL_DATA`` (``~/.cache/influal``) in a folder named after its settings. Pool size from
  ``detection.pool_size``, reference (validation) and test sizes from ``val_size`` / ``test_size``
  (defaults 200 / 300).
- ``coco``: ``--data-root`` holds ``train.json`` (the pool), ``test.json`` and optionally ``val.json`` (the
  reference set), with image ``file_name`` relative to that folder.
- ``voc``: ``--data-root`` is a ``VOC2012``-style folder; the pool is the ``train`` image set and the test set
  the ``val`` one.

Where no reference file exists, ``val_size`` images (default 10 % of the pool, at most 500) are held out of
the pool by a seeded permutation: the reference set is never the test set (the official code used its test
set, spec §9.2). Pool images without any box are dropped, as the official code does (with a
:class:`~influal.core.errors.DataWarning` giving their count), and test images that the pool or the reference
set also holds (compared by ``file_name``) are a ``DataWarning`` too. Every image file must exist before an
experiment starts (:meth:`CocoDetectionDataset.check_files`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ....api import DatasetSplits
from ....core.errors import ConfigError, DataError, DataWarning
from ....core.registry import Registry
from .canvas import CanvasSpec, write_digit_canvas
from .coco import CocoDetectionDataset

DATASETS: Registry = Registry("detection dataset", entry_point_group="influal.detection_datasets")
SPLIT_SEED = 0


def default_data_root() -> Path:
    return Path(os.environ.get("INFLUAL_DATA", Path.home() / ".cache" / "influal"))


def canvas_spec(config) -> CanvasSpec:
    det = config.task_settings
    return CanvasSpec(pool=det.pool_size, val=config.val_size or 200, test=config.test_size or 300,
                      image_size=det.image_size, min_digits=det.min_digits, max_digits=det.max_digits,
                      min_scale=max(8, det.image_size // 8 + 4), max_scale=max(8, det.image_size * 11 // 32))


def hold_out(pool: CocoDetectionDataset, size: int | None) -> tuple[CocoDetectionDataset, CocoDetectionDataset]:
    """(pool, reference): ``size`` images (default 10 % of the pool, at most 500) held out by a seeded permutation."""
    size = size if size is not None else max(1, min(500, len(pool) // 10))
    if size >= len(pool):
        raise ConfigError(f"val_size {size} leaves no pool images out of {len(pool)}; lower --val-size")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    return pool.subset(np.sort(order[size:]), name="pool"), pool.subset(np.sort(order[:size]), name="val")


def _splits(name: str, config, pool, val, test, image_size: int) -> DatasetSplits:
    return DatasetSplits(name, pool=pool, val=val, test=test, num_classes=pool.num_classes, in_channels=3,
                         image_size=image_size)


def _require_root(config) -> Path:
    if config.data_root is None:
        raise ConfigError(f"dataset {config.dataset!r} needs --data-root (a local folder; nothing is downloaded)")
    return Path(config.data_root)


def _finish(name: str, config, pool, val, test) -> DatasetSplits:
    """Drop the pool images without boxes (with a warning), hold out a reference set if none was given, cut the
    test set to ``test_size`` and warn about images the test set shares with the pool or the reference set."""
    for part in (pool, val, test):
        if part is not None:
            part.check_files()
    if len(test) == 0:
        raise DataError(f"{test.source} holds no images; the test set needs some")
    keep = pool.with_boxes()
    if len(keep) == 0:
        raise DataError(f"none of the {len(pool)} images of {pool.source} has an annotation; the pool needs "
                        "annotated images")
    if len(keep) < len(pool):
        warnings.warn(f"{len(pool) - len(keep)} of the {len(pool)} images of {pool.source} have no annotations and "
                      "are left out of the pool (they have no boxes to reveal)", DataWarning, stacklevel=3)
    pool = pool.subset(keep, name="pool")
    if val is not None and len(val) == 0:
        raise DataError(f"{val.source} holds no images; the reference set needs some (or delete the file to hold "
                        "out part of the pool)")
    if val is None:
        pool, val = hold_out(pool, config.val_size)
    if config.test_size is not None and config.test_size < len(test):
        test = test.subset(np.arange(config.test_size), name="test")
    shared = (pool.file_names() | val.file_names()) & test.file_names()
    if shared:
        warnings.warn(f"{len(shared)} of the {len(test)} test images (by file_name) are also in the pool or the "
                      f"reference set (e.g. {min(shared)!r}): the test score is then measured on images the "
                      f"strategies can label; give {test.source} images of its own", DataWarning, stacklevel=3)
    det = config.task_settings
    return _splits(name, config, pool, val, test, det.min_size or det.image_size)


@DATASETS.register("digit-canvas")
def load_digit_canvas(config) -> DatasetSplits:
    spec = canvas_spec(config)
    root = config.data_root
    if root is None:
        root = default_data_root() / (f"digit-canvas-{spec.image_size}px-{spec.pool}-{spec.val}-{spec.test}-"
                                      f"{spec.min_digits}to{spec.max_digits}")
    root = write_digit_canvas(root, spec)
    pool, val, test = (CocoDetectionDataset.from_json(Path(root) / f"{s}.json", name=s) for s in ("pool", "val", "test"))
    for part in (pool, val, test):
        part.check_files()
    return _splits("digit-canvas", config, pool, val, test, spec.image_size)


@DATASETS.register("coco")
def load_coco(config) -> DatasetSplits:
    root = _require_root(config)
    pool = CocoDetectionDataset.from_json(root / "train.json", name="pool", cache=False)
    test = CocoDetectionDataset.from_json(root / "test.json", name="test", cache=False, category_ids=pool.category_ids)
    val = CocoDetectionDataset.from_json(root / "val.json", name="val", cache=False,
                                         category_ids=pool.category_ids) if (root / "val.json").exists() else None
    return _finish("coco", config, pool, val, test)


@DATASETS.register("voc")
def load_voc_folder(config) -> DatasetSplits:
    from .voc import load_voc

    root = _require_root(config)
    return _finish("voc", config, load_voc(root, "train", cache=False), None, load_voc(root, "val", cache=False))


__all__ = ["DATASETS", "CanvasSpec", "CocoDetectionDataset", "canvas_spec", "default_data_root", "hold_out",
           "write_digit_canvas"]
