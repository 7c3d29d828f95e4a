"""Image files decoded on demand: :class:`ImageFileDataset`, :func:`read_image` and :func:`image_stats`.

The images stay on disk: a batch is decoded with Pillow when it is asked for (``get_batch``) and stacked into one
tensor; at most :attr:`ImageFileDataset.cache_bytes` of decoded pixels are kept (shared by a data set and its
subsets), so a pool far larger than memory can be scored. Every image comes out as ``channels`` x ``size`` x
``size``: converted to ``"L"`` (1 channel) or ``"RGB"`` (3), and resized (bilinear, antialiased; the aspect ratio
is not kept) when its size differs.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ....core.errors import DataError

# Pillow modes of one channel; 16-bit ones are scaled to 0..255, "I" and "F" clipped to it (as Pillow converts)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _decode(path: Path, channels: int, size: int) -> np.ndarray:
    """uint8 pixels ``[size, size]`` (1 channel) or ``[size, size, 3]``."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            if img.format == "JPEG" and min(img.size) >= 2 * size:
                img.draft(mode, (size, size))  # DCT scaling: decode at 1/2, 1/4 or 1/8 (never below size)
            if img.mode in _WIDE_MODES:  # 16-bit grayscale: 0..65535 -> 0..255
                wide = np.asarray(img, dtype=np.uint32)
                img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
            if img.mode != mode:
                img = img.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError
        raise DataError(f"cannot read image {path} ({_detail(exc)}); replace the file or leave it out of the data "
                        "set") from None


def read_image(path: Path, channels: int, size: int) -> torch.Tensor:
    """uint8 ``[channels, size, size]``: Pillow decode, convert to ``"L"`` (channels=1) or ``"RGB"`` (3), resize to
    size x size (bilinear, antialiased) when it differs. A file Pillow cannot read is a DataError naming it."""
    if channels not in (1, 3):
        raise DataError(f"images are read with 1 or 3 channels, not {channels}")
    pixels = _decode(Path(path), channels, int(size))
    tensor = torch.from_numpy(pixels.copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


PARALLEL_PIXELS = 64 * 64 * 3  # images at least this large (S * S * C) are decoded by a thread pool
_POOL = None


def _threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _pool(threads: int):
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(threads, thread_name_prefix="influal-decode")
    return _POOL


class _PixelCache:
    """Decoded images by relative path, up to a byte budget (filled first come, never evicted: a cyclic pass over
    more images than fit keeps the first ones instead of thrashing). Shared by a data set and its subsets."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.used = 0
        self.items: dict[str, np.ndarray] = {}

    def get(self, key: str):
        return self.items.get(key)

    def put(self, key: str, pixels: np.ndarray) -> None:
        if key not in self.items and self.used + pixels.nbytes <= self.budget:
            self.items[key] = pixels
            self.used += pixels.nbytes


class ImageFileDataset(Dataset):
    """Images decoded from files on demand (never all in memory), integer labels (-1 = not labeled yet).

    ``paths`` are relative to ``root``; items come out as float ``[channels, image_size, image_size]`` normalised
    with the per-channel ``mean`` and ``std`` (given on the 0..255 scale, as :class:`TensorImageDataset`'s).
    ``get_batch`` decodes a batch with Pillow into one stacked tensor. Up to :attr:`cache_bytes` of decoded pixels
    are kept for the next epoch (0 turns that off); a data set, its subsets and relabelled copies share them.
    ``source`` names the data in error messages.
    """

    cache_bytes: int = 256 * 2 ** 20

    def __init__(self, root, paths: Sequence[str], labels, *, image_size: int, channels: int,
                 mean: Sequence[float], std: Sequence[float], classes: Sequence[str] | None = None,
                 source: str = "images"):
        self.root = Path(root)
        self.paths = [str(p) for p in paths]
        self.source = source
        if channels not in (1, 3):
            raise DataError(f"{source}: images are read with 1 or 3 channels, not {channels!r}")
        if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 1:
            raise DataError(f"{source}: image_size must be a positive number of pixels, got {image_size!r}")
        self.image_size, self.channels = int(image_size), int(channels)
        self.labels = self._check_labels(labels)
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"{source}: images have {channels} channel(s) but mean has {len(mean)} and std "
                            f"{len(std)} values")
        if not all(math.isfinite(float(v)) for v in list(mean) + list(std)) or min(float(v) for v in std) <= 0:
            raise DataError(f"{source}: mean {list(mean)} and std {list(std)} must be finite, and std > 0")
        self.mean = torch.tensor([float(v) for v in mean], dtype=torch.float32).view(1, channels, 1, 1)
        self.std = torch.tensor([float(v) for v in std], dtype=torch.float32).view(1, channels, 1, 1)
        self.classes = list(classes) if classes is not None else None
        self._cache = _PixelCache(self.cache_bytes)

    def _check_labels(self, labels) -> torch.Tensor:
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if labels.ndim != 1 or len(labels) != len(self.paths):
            raise DataError(f"{self.source}: {len(self.paths)} images but labels of shape {tuple(labels.shape)}; "
                            "give one label per image")
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise DataError(f"{self.source}: labels must be integers (class indices), got fractional values")
        labels = labels.long()
        if len(labels) and int(labels.min()) < -1:
            raise DataError(f"{self.source}: labels must be class indices >= 0 (or -1: not labeled yet), found "
                            f"{int(labels.min())}")
        return labels

    def _copy(self, paths: list[str], labels) -> "ImageFileDataset":
        new = ImageFileDataset(self.root, paths, labels, image_size=self.image_size, channels=self.channels,
                               mean=self.mean.flatten().tolist(), std=self.std.flatten().tolist(),
                               classes=self.classes, source=self.source)
        new._cache = self._cache
        return new

    def __len__(self) -> int:
        return len(self.paths)

    def get_batch(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """float ``[n, C, S, S]`` normalised ``(x - mean) / std``, and the labels ``[n]``."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        s, c = self.image_size, self.channels
        keys = [self.paths[i] for i in ids.tolist()]
        out = np.empty((len(keys), s, s) if c == 1 else (len(keys), s, s, c), dtype=np.uint8)
        todo = []
        for k, key in enumerate(keys):
            cached = self._cache.get(key)
            if cached is None:
                todo.append(k)
            else:
                out[k] = cached
        if todo:
            def decode(k: int) -> np.ndarray:
                return _decode(self.root / keys[k], c, s)
            threads = _threads()
            # large images decode in parallel (Pillow releases the GIL while decoding); small ones are faster serially
            many = threads > 1 and len(todo) >= 2 * threads and s * s * c >= PARALLEL_PIXELS
            for k, pixels in zip(todo, _pool(threads).map(decode, todo) if many else map(decode, todo)):
                out[k] = pixels
                self._cache.put(keys[k], pixels)
        pixels = torch.from_numpy(out)
        pixels = pixels.unsqueeze(1) if c == 1 else pixels.permute(0, 3, 1, 2).contiguous()
        return (pixels.float() - self.mean) / self.std, self.labels[ids]

    def __getitem__(self, i: int):
        x, y = self.get_batch([int(i)])
        return x[0], int(y[0])

    def subset(self, ids) -> "ImageFileDataset":
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        return self._copy([self.paths[i] for i in ids.tolist()], self.labels[ids])

    def with_labels(self, labels) -> "ImageFileDataset":
        """The same images with other labels (-1 = not labeled yet)."""
        return self._copy(list(self.paths), labels)

    def fingerprint(self) -> str:
        """A hash of the relative paths, the file sizes, the labels and how images are read (channels, size, mean,
        std); cheap: nothing is decoded, and moving the folder does not change it."""
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{self.channels}x{self.image_size};{len(self.paths)};".encode())
        for path in self.paths:
            try:
                size = os.stat(self.root / path).st_size
            except OSError as exc:
                raise DataError(f"cannot read image {self.root / path} ({_detail(exc)}); restore the file or leave "
                                "it out of the data set") from None
            h.update(f"{path}\0{size}\0".encode())
        for t in (self.labels, self.mean, self.std):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


def image_stats(root, paths, channels, size, sample=500, seed=0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..255 scale from a seeded sample of the images (at most ``sample`` of
    them, read as :func:`read_image` reads them). A std below 1 (near-constant images) is taken as 1."""
    paths = list(paths)
    if not paths:
        raise DataError(f"no images under {root} to measure the mean and std on")
    picks = np.sort(np.random.default_rng(seed).choice(len(paths), size=min(int(sample), len(paths)),
                                                        replace=False))
    total = np.zeros(channels, dtype=np.float64)
    squares = np.zeros(channels, dtype=np.float64)
    count = 0
    for i in picks.tolist():
        pixels = _decode(Path(root) / paths[i], channels, size).reshape(-1, channels).astype(np.float64)
        total += pixels.sum(0)
        squares += (pixels ** 2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return [round(float(m), 4) for m in mean], [round(max(float(s), 1.0), 4) for s in std]
