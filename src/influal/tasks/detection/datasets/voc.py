"""Pascal VOC XML annotations, converted to a COCO detection dict (then loaded by :mod:`.coco`).

Folder layout (a ``VOCdevkit/VOC2012``-style root)::

    Annotations/<id>.xml   JPEGImages/<id>.jpg   ImageSets/Main/<image_set>.txt

Conventions of the conversion:
- VOC pixel boxes are 1-based and inclusive: ``xmin..xmax`` becomes COCO ``x = xmin - 1, w = xmax - xmin + 1``
  (the detectron2 / mmdetection convention), so a box's continuous extent covers exactly its pixels.
- Categories are the 20 VOC classes in their usual alphabetical order, with ids 1..20.
- ``difficult`` objects are kept as ``iscrowd = 1``: not training targets and ignored by COCO evaluation, as
  the VOC metric ignores them, but counted as labelled boxes in the cost.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ....core.errors import DataError
from .coco import CocoDetectionDataset

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _text(node: ET.Element, tag: str, source: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"{source}: missing <{tag}>")
    return child.text.strip()


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\x00")


def _number(node: ET.Element, tag: str, source: Path) -> float:
    text = _text(node, tag, source)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{source}: <{tag}> is {text!r}; it must be a number")
    return value


def _difficult(obj: ET.Element, source: Path) -> int:
    node = obj.find("difficult")
    text = (node.text or "").strip() if node is not None else ""
    if text in ("", "0", "1"):
        return int(text or 0)
    raise DataError(f"{source}: <difficult> is {text!r}; it must be 0 or 1")


def parse_voc_xml(path: str | Path) -> dict:
    """One annotation file -> ``{"file_name", "width", "height", "objects": [(name, difficult, xmin, ymin,
    xmax, ymax)]}`` with the raw (1-based, inclusive) VOC coordinates.

    A value that is not a number, a ``difficult`` other than 0 / 1, a size that is not a positive whole number of
    pixels and an inverted box (``xmax < xmin`` or ``ymax < ymin``) are DataErrors naming the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot read VOC annotation {path} ({exc})") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"{path}: missing <size>")
    width, height = (_number(size, tag, path) for tag in ("width", "height"))
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DataError(f"{path}: the image size {width:g}x{height:g} must be positive whole numbers of pixels")
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: an <object> has no <bndbox>")
        name = _text(obj, "name", path)
        xmin, ymin, xmax, ymax = (_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(f"{path}: the {name} box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is inverted "
                            "(xmax < xmin or ymax < ymin); fix its <bndbox>")
        objects.append((name, _difficult(obj, path), xmin, ymin, xmax, ymax))
    return {"file_name": _text(root, "filename", path), "width": int(width), "height": int(height),
            "objects": objects}


def voc_to_coco(root: str | Path, image_set: str = "train", classes: tuple[str, ...] = VOC_CLASSES) -> dict:
    """Convert the images listed in ``ImageSets/Main/<image_set>.txt`` to a COCO dict.

    ``file_name`` is relative to ``root`` (``JPEGImages/<file>``).
    """
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.exists():
        raise DataError(f"{listing} does not exist; point --data-root at a VOC folder (e.g. VOCdevkit/VOC2012)")
    try:
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {listing} ({exc})") from None
    if not ids:
        raise DataError(f"{listing} lists no images")
    cat_id = {name: k + 1 for k, name in enumerate(classes)}
    images, annotations = [], []
    for k, stem in enumerate(ids):
        if not _plain_name(stem):
            raise DataError(f"{listing}: {stem!r} is not an image id (a file name without folders or '..')")
        parsed = parse_voc_xml(root / "Annotations" / f"{stem}.xml")
        if not _plain_name(parsed["file_name"]):
            raise DataError(f"{root / 'Annotations' / f'{stem}.xml'}: <filename> {parsed['file_name']!r} must be a "
                            "file name in JPEGImages, without folders or '..'")
        images.append({"id": k + 1, "file_name": f"JPEGImages/{parsed['file_name']}", "width": parsed["width"],
                       "height": parsed["height"], "voc_id": stem})
        for name, difficult, xmin, ymin, xmax, ymax in parsed["objects"]:
            if name not in cat_id:
                raise DataError(f"{root / 'Annotations' / f'{stem}.xml'}: unknown class {name!r}; expected one of "
                                f"the {len(classes)} classes {', '.join(classes)}")
            x, y, w, h = xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": cat_id[name],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(bool(difficult))})
    categories = [{"id": cat_id[name], "name": name, "supercategory": "voc"} for name in classes]
    return {"images": images, "annotations": annotations, "categories": categories}


def load_voc(root: str | Path, image_set: str = "train", **kwargs) -> CocoDetectionDataset:
    """The VOC image set as a :class:`CocoDetectionDataset`."""
    kwargs.setdefault("source", f"{Path(root) / 'ImageSets' / 'Main' / f'{image_set}.txt'}")
    return CocoDetectionDataset(voc_to_coco(root, image_set), root, name=f"voc-{image_set}", **kwargs)
