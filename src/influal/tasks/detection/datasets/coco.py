"""A COCO-json detection data set: images, annotations and categories, as a torch ``Dataset``.

Conventions:
- Items are indexed 0..n-1 in the order of the json's ``images`` list; ``image_id(i)`` gives the COCO id.
- Category ids map to contiguous labels ``1..K`` in increasing id order; label 0 is the background
  (torchvision's convention for Faster R-CNN; FCOS simply never predicts it).
- Targets hold ``boxes`` as float ``[x1, y1, x2, y2]`` (COCO ``[x, y, w, h]`` converted) and int64 ``labels``.
  Crowd boxes (``iscrowd=1``, and VOC "difficult" ones converted to it) are not training targets; COCO
  evaluation ignores them in the usual way.
- Every entry is checked when the data set is built, and a bad one is a :class:`DataError` naming it: image
  ids and annotation ids are unique integers; every image has a ``file_name`` relative to the image folder
  (no absolute path, no ``..``); ``width`` / ``height``, where given, are positive numbers; every annotation
  names an image of the file and a known category by integer ids and has a ``bbox`` of four finite numbers.
  A box of a non-crowd annotation needs width and height > 0. A crowd box (an ignore region, never a
  training target) may have zero width or height, never a negative one. Boxes may reach at most
  :data:`BORDER_SLACK` pixel past the image border where the image's size is given (the float slack of
  annotation tools; VOC's occasional 0 coordinate). :meth:`check_files` (called by the loaders before anything
  is written) checks that every named image file exists.
- Cost: :meth:`num_boxes` counts every annotation entry of the images, crowd ones included, as the
  official ISAL code counts "bbox num".
- Images come out as float tensors ``[3, H, W]`` in 0..1 (grayscale is repeated to three channels). Decoded
  images are cached in memory as uint8 when ``cache=True``.
"""

from __future__ import annotations

import copy
import math
import posixpath
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ....core.errors import DataError
from ....core.io import read_json
from ..boxes import xywh_to_xyxy


BORDER_SLACK = 1.0  # pixels a box may reach past the image border (annotation tools' float slack)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (not a bool) that float32 holds: ``1e400`` or a 400-digit integer is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and abs(value) < 3e38
    except OverflowError:  # an integer too large for a float
        return False


def normalized_file_name(file_name: str) -> str:
    """``file_name`` in one spelling (``a//b``, ``./a/b`` -> ``a/b``), to compare the files of two jsons."""
    return posixpath.normpath(file_name.replace("\\", "/"))


def _check_file_name(file_name, what: str) -> str:
    if not isinstance(file_name, str) or not file_name.strip():
        raise DataError(f"{what} has no file_name (got {file_name!r}); give each image the path of its file, "
                        "relative to the image folder")
    parts = re.split(r"[/\\]", file_name)
    if (file_name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", file_name) or ".." in parts
            or "\x00" in file_name):
        raise DataError(f"{what} has file_name {file_name!r}, which points outside the image folder; give a path "
                        "relative to that folder, without '..'")
    return file_name


def _check_coco(data, source: str) -> None:
    if not isinstance(data, dict):
        raise DataError(f"{source} is not a COCO detection json: expected an object with images, annotations and "
                        f"categories, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data or not isinstance(data[key], list):
            raise DataError(f"{source} is not a COCO detection json: it lacks the list {key!r}")
    if not data["categories"]:
        raise DataError(f"{source} defines no categories")


def _check_categories(categories: list, source: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            got = cat.get("id") if isinstance(cat, dict) else cat
            raise DataError(f"{source}: category #{k} has id {got!r}; category ids must be integers")
        if cat["id"] in names:
            raise DataError(f"{source}: category ids are not unique: {cat['id']} appears twice")
        names[cat["id"]] = str(cat.get("name", cat["id"]))
    return names


def _check_images(infos: list, source: str) -> dict[int, int]:
    """Image id -> index, after checking every image entry."""
    index: dict[int, int] = {}
    files: dict[str, int] = {}
    for k, info in enumerate(infos):
        if not isinstance(info, dict):
            raise DataError(f"{source}: images[{k}] is not an object with id and file_name")
        image_id = info.get("id")
        if not _is_int(image_id):
            raise DataError(f"{source}: image #{k} ({info.get('file_name')!r}) has id {image_id!r}; image ids must "
                            "be integers")
        what = f"{source}: image {image_id}"
        file_name = _check_file_name(info.get("file_name"), what)
        if image_id in index:
            raise DataError(f"{source}: image ids are not unique: {image_id} is the id of images #{index[image_id]} "
                            f"and #{k}")
        key = normalized_file_name(file_name)
        if key in files:
            raise DataError(f"{source}: images {infos[files[key]]['id']} and {image_id} are the same file "
                            f"{file_name!r}; list each image once")
        for side in ("width", "height"):
            if side in info and not (_is_number(info[side]) and info[side] > 0):
                raise DataError(f"{what} ({file_name!r}) has {side} {info[side]!r}; it must be a positive number of "
                                "pixels (or be left out)")
        index[image_id] = k
        files[key] = k
    return index


def _check_annotation(ann, j: int, infos: list, index: dict[int, int], label_of: dict[int, int],
                      ann_ids: set, source: str) -> int:
    """Check one annotation; returns the index of its image."""
    if not isinstance(ann, dict):
        raise DataError(f"{source}: annotations[{j}] is not an object")
    ann_id = ann.get("id")
    what = f"{source}: annotation {ann_id}" if "id" in ann else f"{source}: annotation #{j} (it has no id)"
    if "id" in ann:
        if not _is_int(ann_id):
            raise DataError(f"{source}: annotation #{j} has id {ann_id!r}; annotation ids must be integers")
        if ann_id in ann_ids:
            raise DataError(f"{source}: annotation ids are not unique: {ann_id} appears twice")
        ann_ids.add(ann_id)
    image_id = ann.get("image_id")
    if not _is_int(image_id):
        raise DataError(f"{what} has image_id {image_id!r}; it must be the integer id of an image of the file")
    k = index.get(image_id)
    if k is None:
        raise DataError(f"{what} refers to image {image_id}, which is not among the images; add the image or "
                        "remove the annotation")
    info = infos[k]
    what = f"{what} (image {image_id}, {info['file_name']!r})"
    category = ann.get("category_id")
    if not _is_int(category) or category not in label_of:
        known = sorted(label_of)
        listed = ", ".join(map(str, known[:10])) + (", ..." if len(known) > 10 else "")
        raise DataError(f"{what} has category {category!r}, which is not among the {len(known)} categories "
                        f"({listed}); fix its category_id or add the category")
    crowd = ann.get("iscrowd", 0)
    if not isinstance(crowd, (int, float)) or crowd not in (0, 1):
        raise DataError(f"{what} has iscrowd {crowd!r}; it must be 0 or 1")
    if "bbox" not in ann:
        raise DataError(f"{what} has no bbox; every annotation needs a box [x, y, width, height]")
    box = ann["bbox"]
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise DataError(f"{what} has bbox {box!r}; a bbox is four finite numbers [x, y, width, height]")
    x, y, w, h = box
    if (w < 0 or h < 0) or (not crowd and (w <= 0 or h <= 0)):
        raise DataError(f"{what} has bbox {list(box)} of width {w} and height {h}; a box needs width and height > 0 "
                        "(fix the box or remove the annotation)")
    for side, lo, extent in (("width", x, w), ("height", y, h)):
        limit = info.get(side)
        if lo < -BORDER_SLACK or (limit is not None and lo + extent > limit + BORDER_SLACK):
            raise DataError(f"{what} has bbox {list(box)}, which lies outside the image of {side} "
                            f"{limit if limit is not None else '?'}; fix the box or the image's size")
    if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
        raise DataError(f"{what} has area {ann['area']!r}; it must be a number >= 0 (or be left out)")
    return k


class CocoDetectionDataset(Dataset):
    """Images and boxes of a COCO detection json; ``image_root`` is the folder ``file_name`` is relative to.

    ``source`` names the data in error messages (default ``name``; :meth:`from_json` gives the file's path).
    """

    def __init__(self, coco: dict, image_root: str | Path, *, name: str = "coco", cache: bool = True,
                 category_ids: Sequence[int] | None = None, source: str | None = None):
        self.source = source or name
        _check_coco(coco, self.source)
        self.coco = coco
        self.image_root = Path(image_root)
        self.name = name
        self.cache = cache
        self._images: dict[int, torch.Tensor] = {}
        names = _check_categories(coco["categories"], self.source)
        if category_ids is not None and not all(_is_int(c) for c in category_ids):
            raise DataError(f"{self.source}: category ids {list(category_ids)} must be integers")
        self.category_ids = sorted(names) if category_ids is None else [int(c) for c in category_ids]
        self.label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.class_names = [names.get(cid, str(cid)) for cid in self.category_ids]
        self.infos = list(coco["images"])
        index = _check_images(self.infos, self.source)
        self._anns: list[list[dict]] = [[] for _ in self.infos]
        ann_ids: set[int] = set()
        for j, ann in enumerate(coco["annotations"]):
            k = _check_annotation(ann, j, self.infos, index, self.label_of, ann_ids, self.source)
            self._anns[k].append(ann)
        self._targets = [self._make_target(anns) for anns in self._anns]

    @classmethod
    def from_json(cls, path: str | Path, image_root: str | Path | None = None, **kwargs) -> "CocoDetectionDataset":
        """Load ``path``; images are looked up relative to ``image_root`` (default: the json's folder)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"COCO json {path} does not exist" + (" (it is a folder)" if path.exists() else ""))
        try:
            data = read_json(path)
        except (ValueError, OSError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise DataError(f"{path} is not valid JSON ({exc})") from None
        kwargs.setdefault("source", str(path))
        return cls(data, image_root if image_root is not None else path.parent, name=kwargs.pop("name", path.stem),
                   **kwargs)

    # ------------------------------------------------------------------ basic access
    @property
    def num_classes(self) -> int:
        """Number of object categories K (labels are 1..K)."""
        return len(self.category_ids)

    def fingerprint(self) -> str:
        """A hash of the images' entries and their annotations (not of the image files, nor of where they lie)."""
        import hashlib
        import json

        h = hashlib.blake2b(digest_size=8)
        h.update(json.dumps({"images": self.infos, "annotations": self._anns, "categories": self.category_ids},
                            sort_keys=True, default=str).encode())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.infos)

    def image_id(self, i: int) -> int:
        return int(self.infos[i]["id"])

    def _make_target(self, anns: list[dict]) -> dict[str, torch.Tensor]:
        keep = [a for a in anns if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = xywh_to_xyxy(torch.tensor([a["bbox"] for a in keep], dtype=torch.float32).reshape(-1, 4))
        labels = torch.tensor([self.label_of[int(a["category_id"])] for a in keep], dtype=torch.int64)
        return {"boxes": boxes, "labels": labels}

    def target(self, i: int) -> dict[str, torch.Tensor]:
        t = self._targets[i]
        return {"boxes": t["boxes"].clone(), "labels": t["labels"].clone()}

    def image_uint8(self, i: int) -> torch.Tensor:
        """The image as uint8 ``[3, H, W]``."""
        cached = self._images.get(i)
        if cached is not None:
            return cached
        from PIL import Image

        info = self.infos[i]
        path = self.image_root / info["file_name"]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, DecompressionBombError, ...
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot read image {path} ({detail}); replace the file or remove the image from "
                            f"{self.source}") from None
        height, width = array.shape[:2]
        if info.get("width", width) != width or info.get("height", height) != height:
            raise DataError(f"image {path} is {width}x{height} pixels, but {self.source} says "
                            f"{info.get('width')}x{info.get('height')}; fix its width and height")
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        if self.cache:
            self._images[i] = image
        return image

    def image(self, i: int) -> torch.Tensor:
        return self.image_uint8(i).float() / 255.0

    def __getitem__(self, i: int):
        return self.image(int(i)), self.target(int(i))

    def get_batch(self, ids) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return [self.image(i) for i in ids], [self.target(i) for i in ids]

    # ------------------------------------------------------------------ cost and subsets
    def boxes_per_image(self) -> np.ndarray:
        """Annotation entries per image (crowd ones included): the labelling cost of each image."""
        return np.asarray([len(a) for a in self._anns], dtype=np.int64)

    def num_boxes(self, ids: Sequence[int]) -> int:
        """Ground-truth boxes in the images ``ids``."""
        counts = self.boxes_per_image()
        return int(counts[np.asarray(ids, dtype=np.int64)].sum()) if len(ids) else 0

    def coco_subset(self, ids: Sequence[int] | None = None) -> dict:
        """A COCO dict of the images ``ids`` (all by default) with their annotations, for evaluation."""
        ids = range(len(self)) if ids is None else [int(i) for i in ids]
        images = [copy.deepcopy(self.infos[i]) for i in ids]
        annotations = []
        for i in ids:
            for ann in self._anns[i]:
                ann = copy.deepcopy(ann)
                ann.setdefault("iscrowd", 0)
                ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
                annotations.append(ann)
        used, next_id = {a["id"] for a in annotations if "id" in a}, 1
        for ann in annotations:
            if "id" not in ann:  # 1, 2, ... in order, skipping the ids the other annotations have
                while next_id in used:
                    next_id += 1
                ann["id"] = next_id
                used.add(next_id)
        cats = [c for c in self.coco["categories"] if int(c["id"]) in self.label_of]
        return {"images": images, "annotations": annotations, "categories": copy.deepcopy(cats)}

    def subset(self, ids: Sequence[int], name: str | None = None) -> "CocoDetectionDataset":
        """A data set of the images ``ids`` (same category mapping, shared image cache)."""
        ids = [int(i) for i in ids]
        sub = CocoDetectionDataset(self.coco_subset(ids), self.image_root, name=name or self.name, cache=self.cache,
                                   category_ids=self.category_ids, source=self.source)
        for new, old in enumerate(ids):
            if old in self._images:
                sub._images[new] = self._images[old]
        return sub

    def check_files(self, verify: bool = True) -> None:
        """Every image file the data set names exists (a DataError naming the first missing one and the count) and,
        with ``verify``, is an image file Pillow can read (``Image.verify``: the header and the file's integrity,
        without decoding the pixels), so that a broken file is found before anything is written."""
        missing = [info["file_name"] for info in self.infos if not (self.image_root / info["file_name"]).is_file()]
        if missing:
            raise DataError(f"{self.source}: {len(missing)} of its {len(self.infos)} image files do not exist "
                            f"under {self.image_root} (the first: {missing[0]!r}); fix the file_name entries or "
                            "point --data-root (or --images / --test-images) at the folder they are relative to")
        if not verify:
            return
        from PIL import Image, UnidentifiedImageError

        broken = []
        for info in self.infos:
            path = self.image_root / info["file_name"]
            try:
                with Image.open(path) as img:
                    img.verify()
            except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
                broken.append((path, exc))
        if broken:
            path, exc = broken[0]
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{self.source}: {len(broken)} of its {len(self.infos)} image files cannot be read as "
                            f"images (the first: cannot read image {path}: {first})")

    def file_names(self) -> set[str]:
        """The images' ``file_name`` values, normalised (:func:`normalized_file_name`)."""
        return {normalized_file_name(info["file_name"]) for info in self.infos}

    def with_boxes(self) -> np.ndarray:
        """Indices of the images with at least one annotation (the official code drops the others from the pool)."""
        return np.flatnonzero(self.boxes_per_image() > 0)
