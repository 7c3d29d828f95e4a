"""One's own labeled images: a folder of class sub-folders (``imagefolder``) or a csv of paths and labels (``csv``).

``imagefolder``: ``--data-root DIR`` holds one sub-folder per class (torchvision's ImageFolder layout; class names
sorted as text, images found in the class folder and below it). Image files end in .png .jpg .jpeg .bmp .gif
.webp .tif .tiff (any case); hidden files and folders and other files are skipped. If DIR holds ``train/`` with
class folders (and ``test/``, ``val/`` beside it), those are the pool, the test set and the reference set.

``csv``: ``--data-root FILE.csv`` with a header naming the columns ``path`` and ``label`` (and optionally
``split``; other columns are ignored). Paths are relative to the csv's folder; labels are class names, sorted
(as numbers when every label is an integer, else as text); ``split`` is ``train``, ``val`` or ``test``.

Splits: without split folders or a split column, the images are split by :func:`stratified_split` (seed 0) into
test (``--test-size``, default 20 % at most 2000), reference (``--val-size``, default 10 % at most 500) and pool
(the rest). With them, a missing test or reference part is held out of ``train`` the same way, and a given one is
cut to ``--test-size`` / ``--val-size`` (stratified) when those are smaller.

Images: 1 channel if every image is grayscale (Pillow modes 1, L, LA, I, I;16, F), else 3 (RGB). Size S: the most
common side if every image is square, else the most common max(width, height); at most 224 (ties: the larger).
Every image is read as S x S (resized, aspect not kept). The mean and std come from up to 500 pool images.

Checked before anything is written, each a one-line :class:`DataError` naming the file: a missing root, no class
folders, fewer than two classes, a csv row with a missing file, an empty label, a path outside the csv's folder
(absolute or with ``..``), a duplicate path or an unknown split. Class folders without images, and image files
Pillow cannot read (``Image.verify``), are left out with a :class:`DataWarning` giving their count and the first.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ....api import DatasetSplits
from ....core.errors import DataError, DataWarning
from .files import GRAY_MODES, ImageFileDataset, image_stats
from .tensors import stratified_split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
MAX_IMAGE_SIZE = 224
SPLIT_SEED = 0
STATS_SAMPLE = 500


@dataclass
class _Entry:
    path: str          # relative to the root, with "/"
    label: str         # the class name
    split: str | None  # train / val / test, or None: split by the loader
    where: str         # what to name in a message (the file, or the csv line)


# ---------------------------------------------------------------------------------------------- discovery
def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()), key=lambda p: p.name)


def _images_below(folder: Path, root: Path) -> list[str]:
    """Image files in ``folder`` and its sub-folders (hidden ones skipped), relative to ``root``, sorted."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(here).relative_to(root).as_posix()
        found.extend(f"{rel}/{name}" for name in sorted(files) if _is_image(name))
    return found


def _class_entries(folder: Path, root: Path, split: str | None) -> tuple[list[_Entry], list[str]]:
    """(entries, class folders without images) of a folder of class folders."""
    entries, empty = [], []
    for class_dir in _subfolders(folder):
        images = _images_below(class_dir, root)
        if not images:
            empty.append(class_dir.relative_to(root).as_posix())
        entries.extend(_Entry(p, class_dir.name, split, str(root / p)) for p in images)
    return entries, empty


def _scan_folder(root: Path) -> tuple[list[_Entry], str]:
    """The entries of an imagefolder root and its layout (``class folders`` or ``split folders``)."""
    if not root.exists():
        raise DataError(f"--data-root {root} does not exist; point it at a folder with one sub-folder per class")
    if not root.is_dir():
        hint = " (for a csv of paths and labels use --dataset csv)" if root.suffix.lower() == ".csv" else ""
        raise DataError(f"--data-root {root} is a file, not a folder of class sub-folders{hint}")
    folders = _subfolders(root)
    split_dirs = {p.name: p for p in folders if p.name in SPLITS and _subfolders(p)}
    if split_dirs:
        if "train" not in split_dirs:
            raise DataError(f"{root} holds {', '.join(n + '/' for n in sorted(split_dirs))} but no train/ folder of "
                            "class folders (the pool); add it, or put the class folders directly in the root")
        others = [p.name for p in folders if p.name not in split_dirs]
        if others:
            warnings.warn(f"{root}: with the split folders {', '.join(n + '/' for n in sorted(split_dirs))} only "
                          f"they are read; ignoring {', '.join(others[:5])}" + (" ..." if len(others) > 5 else ""),
                          DataWarning, stacklevel=4)
        entries, empty = [], []
        for name in SPLITS:
            if name in split_dirs:
                found, none = _class_entries(split_dirs[name], root, name)
                entries += found
                empty += none
        layout = "split folders"
    else:
        if not folders:
            count = len([p for p in root.iterdir() if _is_image(p.name)])
            held = f" holds {count} image(s) but" if count else ""
            raise DataError(f"{root}{held} has no class folders; put each class's images in a sub-folder named "
                            "after the class")
        entries, empty = _class_entries(root, root, None)
        layout = "class folders"
    if empty:
        warnings.warn(f"{root}: {len(empty)} class folder(s) hold no images and are skipped (the first: "
                      f"{empty[0]}/)", DataWarning, stacklevel=4)
    return entries, layout


def _escapes(path: str) -> bool:
    return (path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) is not None
            or ".." in re.split(r"[/\\]", path) or "\x00" in path)


def _scan_csv(file: Path) -> list[_Entry]:
    if not file.exists():
        raise DataError(f"--data-root {file} does not exist; point it at a csv with the columns path,label")
    if file.is_dir():
        raise DataError(f"--data-root {file} is a folder; --dataset csv reads a csv file with the columns path,label "
                        "(for class sub-folders use --dataset imagefolder)")
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            rows = [(n, row) for n, row in enumerate(csv.reader(fh), start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{file} is not a readable csv ({type(exc).__name__}: {exc})") from None
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{file} is empty; it needs a header path,label and one row per image")
    header = [cell.strip().lower() for cell in rows[0][1]]
    if "path" not in header or "label" not in header:
        raise DataError(f"{file}: the header must name the columns path and label (and optionally split), got "
                        f"{','.join(rows[0][1])}")
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    root = file.parent
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    missing: list[tuple[int, str]] = []
    for line, row in rows[1:]:
        where = f"{file}, line {line}"
        if len(row) != len(header):
            raise DataError(f"{where} has {len(row)} field(s) but the header has {len(header)}")
        path, label = row[col["path"]].strip(), row[col["label"]].strip()
        if not path:
            raise DataError(f"{where} has no path")
        if _escapes(path):
            raise DataError(f"{where}: path {path!r} points outside the csv's folder {root}; give a path relative to "
                            "that folder, without '..'")
        if not label:
            raise DataError(f"{where} ({path}) has an empty label; give every image its class name")
        split = None
        if "split" in col:
            split = row[col["split"]].strip().lower()
            if split not in SPLITS:
                raise DataError(f"{where} ({path}) has split {row[col['split']].strip()!r}; use train, val or test")
        key = posixpath.normpath(path.replace("\\", "/"))
        if key in seen:
            raise DataError(f"{file}: lines {seen[key]} and {line} both name {path!r}; list each image once")
        seen[key] = line
        if not (root / key).is_file():
            missing.append((line, path))
        entries.append(_Entry(key, label, split, f"{where} ({root / key})"))
    if missing:
        line, path = missing[0]
        raise DataError(f"{file}: {len(missing)} of the {len(entries)} listed images do not exist under {root} (the "
                        f"first: line {line}, {path!r}); fix the paths (relative to the csv's folder) or the files")
    if not entries:
        raise DataError(f"{file} lists no images; add one row path,label per image")
    return entries


# ---------------------------------------------------------------------------------------------- checks and splits
def _verify(root: Path, entries: list[_Entry], source: str) -> tuple[list[_Entry], list[tuple[str, tuple]], int]:
    """The entries Pillow can read (``Image.verify``: header and integrity, no decoding) with their (mode, size);
    the others are left out with a DataWarning."""
    from PIL import Image

    kept, headers, broken = [], [], []
    for entry in entries:
        try:
            with Image.open(root / entry.path) as img:
                header = (img.mode, img.size)
                img.verify()
        except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, ValueError, DecompressionBombError, ...
            broken.append((entry, exc))
            continue
        kept.append(entry)
        headers.append(header)
    if broken:
        entry, exc = broken[0]
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not kept:
            raise DataError(f"{source}: none of its {len(entries)} image files can be read as images (the first: "
                            f"{entry.where}; {first})")
        warnings.warn(f"{source}: {len(broken)} of its {len(entries)} image files cannot be read as images and are "
                      f"left out (the first: {entry.where}; {first})", DataWarning, stacklevel=4)
    return kept, headers, len(broken)


def _image_shape(headers: list[tuple]) -> tuple[int, int]:
    """(channels, size): 1 if every image is grayscale, else 3; the most common side of square images (or the most
    common max(width, height)), capped at :data:`MAX_IMAGE_SIZE`, ties to the larger."""
    channels = 1 if all(mode in GRAY_MODES for mode, _ in headers) else 3
    square = all(w == h for _, (w, h) in headers)
    counts = Counter(w if square else max(w, h) for _, (w, h) in headers)
    side = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return channels, min(int(side), MAX_IMAGE_SIZE)


def _class_order(names: set[str], numeric: bool) -> list[str]:
    if numeric and all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _take(labels: np.ndarray, size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest): indices into ``labels``; stratified where there are two classes or more."""
    if len(np.unique(labels)) >= 2:
        taken, rest = stratified_split(labels, [size], seed=SPLIT_SEED, name=name)
    else:
        order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
        taken, rest = order[:size], order[size:]
    return np.sort(taken), np.sort(rest)


def _sizes(n: int, config) -> tuple[int, int]:
    test = config.test_size if config.test_size is not None else max(1, min(2000, n // 5))
    val = config.val_size if config.val_size is not None else max(1, min(500, n // 10))
    return test, val


def _assign(labels: np.ndarray, splits: list[str | None], config, source: str) -> dict[str, np.ndarray]:
    """Indices of the pool, val and test parts."""
    split = np.asarray([s or "" for s in splits])
    train = np.flatnonzero((split == "train") | (split == ""))
    given = {name: np.flatnonzero(split == name) for name in ("val", "test")}
    if len(train) == 0:
        raise DataError(f"{source} holds no training (pool) images; give some the split train")
    test_n, val_n = _sizes(len(train), config)
    held = (0 if len(given["test"]) else test_n) + (0 if len(given["val"]) else val_n)
    if held >= len(train):
        raise DataError(f"{source}: holding {held} images out of its {len(train)} for the test and reference sets "
                        "leaves no pool; lower --test-size / --val-size or add images")
    parts = {}
    for name, size in (("test", test_n), ("val", val_n)):
        ids = given[name]
        if len(ids):
            if size < len(ids) and (config.test_size if name == "test" else config.val_size) is not None:
                taken, _ = _take(labels[ids], size, f"{source} ({name})")
                ids = ids[taken]
            parts[name] = ids
        else:
            taken, rest = _take(labels[train], size, source)
            parts[name], train = train[taken], train[rest]
    parts["pool"] = train
    return parts


def _build(name: str, root: Path, entries: list[_Entry], config, source: str, layout: str,
           numeric_labels: bool) -> DatasetSplits:
    entries, headers, unreadable = _verify(root, entries, source)
    classes = _class_order({e.label for e in entries}, numeric_labels)
    if len(classes) < 2:
        raise DataError(f"{source} holds images of {len(classes)} class ({', '.join(classes)}); classification "
                        "needs at least two")
    index = {c: k for k, c in enumerate(classes)}
    labels = np.asarray([index[e.label] for e in entries], dtype=np.int64)
    channels, size = _image_shape(headers)
    parts = _assign(labels, [e.split for e in entries], config, source)
    paths = [e.path for e in entries]
    pool_paths = [paths[i] for i in parts["pool"]]
    absent = sorted(set(classes) - {entries[i].label for i in parts["pool"]})
    if absent:
        warnings.warn(f"{source}: no pool image has the class(es) {', '.join(absent[:5])}" +
                      (" ..." if len(absent) > 5 else "") + "; no strategy can label them", DataWarning, stacklevel=3)
    mean, std = image_stats(root, pool_paths, channels, size, sample=STATS_SAMPLE, seed=SPLIT_SEED)
    full = ImageFileDataset(root, paths, labels, image_size=size, channels=channels, mean=mean, std=std,
                            classes=classes, source=source)
    return DatasetSplits(name, pool=full.subset(parts["pool"]), val=full.subset(parts["val"]),
                         test=full.subset(parts["test"]), num_classes=len(classes), in_channels=channels,
                         image_size=size,
                         identity={"format": name, "root": str(root), "layout": layout, "images": len(entries),
                                   "classes": classes, "mean": mean, "std": std, "unreadable": unreadable})


# ---------------------------------------------------------------------------------------------- loaders
def _root(config, what: str) -> Path:
    if config.data_root is None:
        raise DataError(f"--dataset {config.dataset} needs --data-root {what} (influal never downloads data)")
    return Path(config.data_root).expanduser()


def load_image_folder(config) -> DatasetSplits:
    """``--dataset imagefolder --data-root DIR``: class sub-folders (or train/ test/ val/ folders of them)."""
    root = _root(config, "DIR (a folder with one sub-folder per class)")
    entries, layout = _scan_folder(root)
    return _build("imagefolder", root, entries, config, str(root), layout, numeric_labels=False)


def load_image_csv(config) -> DatasetSplits:
    """``--dataset csv --data-root FILE.csv``: columns path,label[,split], paths relative to the csv's folder."""
    file = _root(config, "FILE.csv (columns path,label and optionally split)")
    entries = _scan_csv(file)
    layout = "csv with splits" if any(e.split for e in entries) else "csv"
    return _build("csv", file.parent, entries, config, str(file), layout, numeric_labels=True)
