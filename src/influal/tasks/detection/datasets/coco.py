"""A COCO-json detection data set: images, annotations and categories, as a torch ``Dataset``.

Conventions:
- Items are indexed 0..n-1 in the order of the json's ``images`` list; ``image_id(i)`` gives the COCO id.
- Category ids map to contiguous labels ``1..K`` in increasing id order; label 0 is the background
  (torchvision's convention for Faster R-CNN; FCOS simply never predicts it).
- Targets hold ``boxes`` as float ``[x1, y1, x2, y2]`` (COCO ``[x, y, w, h]`` converted) and int64 ``labels``.
  Crowd boxes (``iscrowd=1``, and VOC "difficult" ones converted to it) and boxes with no area are not
  training targets; COCO evaluation ignores crowd boxes in the usual way.
- Cost: :meth:`num_boxes` counts every annotation entry of the images, crowd ones included, as the
  official ISAL code counts "bbox num".
- Images come out as float tensors ``[3, H, W]`` in 0..1 (grayscale is repeated to three channels). Decoded
  images are cached in memory as uint8 when ``cache=True``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ....core.errors import DataError
from ....core.io import read_json
from ..boxes import xywh_to_xyxy


def _check_coco(data: dict, source: str) -> None:
    for key in ("images", "annotations", "categories"):
        if key not in data or not isinstance(data[key], list):
            raise DataError(f"{source} is not a COCO detection json: it lacks the list {key!r}")
    if not data["categories"]:
        raise DataError(f"{source} defines no categories")


class CocoDetectionDataset(Dataset):
    """Images and boxes of a COCO detection json; ``image_root`` is the folder ``file_name`` is relative to."""

    def __init__(self, coco: dict, image_root: str | Path, *, name: str = "coco", cache: bool = True,
                 category_ids: Sequence[int] | None = None):
        _check_coco(coco, name)
        self.coco = coco
        self.image_root = Path(image_root)
        self.name = name
        self.cache = cache
        self._images: dict[int, torch.Tensor] = {}
        self.category_ids = sorted(int(c["id"]) for c in coco["categories"]) if category_ids is None \
            else [int(c) for c in category_ids]
        self.label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco["categories"]}
        self.class_names = [names.get(cid, str(cid)) for cid in self.category_ids]
        self.infos = list(coco["images"])
        index = {int(info["id"]): k for k, info in enumerate(self.infos)}
        if len(index) != len(self.infos):
            raise DataError(f"{name}: image ids are not unique")
        self._anns: list[list[dict]] = [[] for _ in self.infos]
        for ann in coco["annotations"]:
            k = index.get(int(ann["image_id"]))
            if k is None:
                continue
            if int(ann["category_id"]) not in self.label_of:
                raise DataError(f"{name}: annotation {ann.get('id')} has category {ann['category_id']}, which is "
                                "not among the categories")
            self._anns[k].append(ann)
        self._targets = [self._make_target(anns) for anns in self._anns]

    @classmethod
    def from_json(cls, path: str | Path, image_root: str | Path | None = None, **kwargs) -> "CocoDetectionDataset":
        """Load ``path``; images are looked up relative to ``image_root`` (default: the json's folder)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"COCO json {path} does not exist")
        try:
            data = read_json(path)
        except ValueError as exc:
            raise DataError(f"{path} is not valid JSON ({exc})") from None
        return cls(data, image_root if image_root is not None else path.parent, name=kwargs.pop("name", path.stem),
                   **kwargs)

    # ------------------------------------------------------------------ basic access
    @property
    def num_classes(self) -> int:
        """Number of object categories K (labels are 1..K)."""
        return len(self.category_ids)

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

        path = self.image_root / self.infos[i]["file_name"]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path} ({exc})") from None
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
        for k, ann in enumerate(annotations):
            ann.setdefault("id", k + 1)
        cats = [c for c in self.coco["categories"] if int(c["id"]) in self.label_of]
        return {"images": images, "annotations": annotations, "categories": copy.deepcopy(cats)}

    def subset(self, ids: Sequence[int], name: str | None = None) -> "CocoDetectionDataset":
        """A data set of the images ``ids`` (same category mapping, shared image cache)."""
        ids = [int(i) for i in ids]
        sub = CocoDetectionDataset(self.coco_subset(ids), self.image_root, name=name or self.name, cache=self.cache,
                                   category_ids=self.category_ids)
        for new, old in enumerate(ids):
            if old in self._images:
                sub._images[new] = self._images[old]
        return sub

    def with_boxes(self) -> np.ndarray:
        """Indices of the images with at least one annotation (the official code drops the others from the pool)."""
        return np.flatnonzero(self.boxes_per_image() > 0)
