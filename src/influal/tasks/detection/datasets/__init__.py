"""Detection data-set formats, found by name in :data:`DATASETS` (``--dataset``): loader(config) -> splits.

- ``digit-canvas``: generated offline (see :mod:`.canvas`) into ``--data-root`` or, by default, under
  ``$INFLUAL_DATA`` (``~/.cache/influal``) in a folder named after its settings. Pool size from
  ``detection.pool_size``, reference (validation) and test sizes from ``val_size`` / ``test_size``
  (defaults 200 / 300).
- ``coco``, one folder: ``--data-root DIR`` holds ``train.json`` (the pool), ``test.json`` and optionally
  ``val.json`` (the reference set), with image ``file_name`` relative to that folder.
- ``coco``, separate paths (as COCO trees are laid out): ``--images DIR --annotations FILE`` (the pool's json and
  the folder its ``file_name`` entries are relative to), optionally ``--test-annotations FILE`` with
  ``--test-images DIR`` (default: ``--images``) for the test set, and ``--val-annotations FILE`` (images under
  ``--images``) for the reference set. Without a test json, ``test_size`` images (default 20 % of the pool, at
  most 2000) are held out of the pool by a seeded permutation. Giving both ``--data-root`` and these paths is
  refused, and so are these paths with another data set.
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
TEST_SPLIT_SEED = 1  # the test set held out of a pool json without a test json (independent of the reference set)
COCO_PATHS = ("images", "annotations", "test_images", "test_annotations", "val_annotations")


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


def hold_out_test(pool: CocoDetectionDataset, size: int | None
                  ) -> tuple[CocoDetectionDataset, CocoDetectionDataset]:
    """(pool, test): ``size`` images (default 20 % of the pool, at most 2000) held out by a seeded permutation."""
    size = size if size is not None else max(1, min(2000, len(pool) // 5))
    if size >= len(pool):
        raise ConfigError(f"test_size {size} leaves no pool images out of the {len(pool)} of {pool.source}; lower "
                          "--test-size or give a test json (--test-annotations)")
    order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(pool))
    return pool.subset(np.sort(order[size:]), name="pool"), pool.subset(np.sort(order[:size]), name="test")


def _coco_paths(config) -> dict[str, str]:
    """The COCO path settings (``--images`` ...) that are set."""
    det = config.task_settings
    return {name: getattr(det, name) for name in COCO_PATHS if getattr(det, name, None) is not None}


def _flags(names) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _refuse_coco_paths(config) -> None:
    given = _coco_paths(config)
    if given:
        raise ConfigError(f"{_flags(given)} only apply to --dataset coco, not --dataset {config.dataset}")


def _folder(path: str, flag: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{flag} {path} {state}; point it at the folder the json's file_name entries are relative to")
    return folder


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
    _refuse_coco_paths(config)
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
    """COCO jsons: ``--data-root DIR`` (train.json, test.json, val.json) or ``--images DIR --annotations FILE``."""
    if _coco_paths(config):
        return _load_coco_paths(config)
    root = _require_root(config)
    pool = CocoDetectionDataset.from_json(root / "train.json", name="pool", cache=False)
    test = CocoDetectionDataset.from_json(root / "test.json", name="test", cache=False, category_ids=pool.category_ids)
    val = CocoDetectionDataset.from_json(root / "val.json", name="val", cache=False,
                                         category_ids=pool.category_ids) if (root / "val.json").exists() else None
    return _finish("coco", config, pool, val, test)


def _load_coco_paths(config) -> DatasetSplits:
    given = _coco_paths(config)
    if config.data_root is not None:
        raise ConfigError(f"--dataset coco takes either --data-root DIR (DIR/train.json, test.json, val.json) or "
                          f"--images DIR --annotations FILE, not both (got --data-root and {_flags(given)})")
    det = config.task_settings
    for flag, needs in (("annotations", "images"), ("images", "annotations"), ("test_images", "test_annotations")):
        if getattr(det, flag) is not None and getattr(det, needs) is None:
            raise ConfigError(f"{_flags([flag])} needs {_flags([needs])} too (--dataset coco --images DIR "
                              "--annotations FILE [--test-images DIR --test-annotations FILE] [--val-annotations "
                              "FILE])")
    if det.images is None:  # only --test-annotations or --val-annotations given
        raise ConfigError(f"{_flags(given)} need --images DIR --annotations FILE (the pool) too")
    images = _folder(det.images, "--images")
    pool = CocoDetectionDataset.from_json(Path(det.annotations).expanduser(), images, name="pool", cache=False)
    if det.test_annotations is not None:
        test_images = _folder(det.test_images, "--test-images") if det.test_images is not None else images
        test = CocoDetectionDataset.from_json(Path(det.test_annotations).expanduser(), test_images, name="test",
                                              cache=False, category_ids=pool.category_ids)
    else:
        pool, test = hold_out_test(pool, config.test_size)
    val = None
    if det.val_annotations is not None:
        val = CocoDetectionDataset.from_json(Path(det.val_annotations).expanduser(), images, name="val", cache=False,
                                             category_ids=pool.category_ids)
    return _finish("coco", config, pool, val, test)


@DATASETS.register("voc")
def load_voc_folder(config) -> DatasetSplits:
    from .voc import load_voc

    _refuse_coco_paths(config)
    root = _require_root(config)
    return _finish("voc", config, load_voc(root, "train", cache=False), None, load_voc(root, "val", cache=False))


__all__ = ["DATASETS", "CanvasSpec", "CocoDetectionDataset", "canvas_spec", "default_data_root", "hold_out",
           "hold_out_test", "write_digit_canvas"]
