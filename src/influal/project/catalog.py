"""The images of a project: found under the image folder, each recorded once with a stable id.

An image's id is its position in the catalog: ids are given in sorted path order at ``init`` and appended, never
reused or changed, by ``add``. A record holds the path relative to the image folder (POSIX separators), the
pixel size, the file size and a BLAKE2b hash of the bytes. Files Pillow cannot decode are left out and listed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..api import ImageRecord
from ..core.errors import DataError
from ..core.progress import progress_bar

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_images(root: Path, skip: Iterable[Path] = ()) -> list[str]:
    """Every image file under ``root`` (by extension, case-insensitive; hidden files and folders skipped), as
    sorted POSIX paths relative to ``root``. Folders in ``skip`` (a project inside its image folder) are left out."""
    skip = {Path(p).resolve() for p in skip}
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((here / name).relative_to(root).as_posix())
    return sorted(found)


def inspect_image(path: Path) -> tuple[int, int]:
    """(width, height) after a full decode; raises whatever Pillow raises for a file it cannot read."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return int(img.width), int(img.height)


@dataclass
class Scan:
    """What a scan of the image folder found: new records, files left out (path, reason), recorded files whose
    content changed (path, what) and recorded files that are gone."""

    records: list[ImageRecord] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def scan(root: Path, known: dict[str, ImageRecord] | None = None, *, skip: Iterable[Path] = (),
         progress: bool = False, under: Path | None = None,
         log: Callable[[str], None] | None = None) -> Scan:
    """Record every image under ``under`` (default: ``root``) that ``known`` does not hold yet, with ids following
    the known ones; check that the known images found there are unchanged (size, then hash)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist" + (" (it is a file)" if root.exists() else ""))
    under = Path(under) if under is not None else root
    known = known or {}
    prefix = under.resolve().relative_to(root.resolve()).as_posix() if under != root else "."
    paths = [p if prefix == "." else f"{prefix}/{p}" for p in find_images(under, skip)]
    out = Scan()
    next_id = len(known)
    for path in progress_bar(paths, desc="images", enabled=progress):
        file = root / path
        record = known.get(path)
        if record is not None:
            size = file.stat().st_size
            if size != record.size:
                out.changed.append((path, f"{record.size} bytes when recorded, {size} now"))
            elif file_hash(file) != record.hash:
                out.changed.append((path, "its content differs from when it was recorded"))
            continue
        try:
            width, height = inspect_image(file)
        except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, DecompressionBombError, ...
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            out.rejected.append({"path": path, "reason": reason})
            continue
        out.records.append(ImageRecord(next_id, path, width, height, file.stat().st_size, file_hash(file)))
        next_id += 1
    found = set(paths)
    out.missing = sorted(p for p in known if (prefix == "." or p.startswith(prefix + "/")) and p not in found)
    return out


def record_from_dict(data: dict, where: str) -> ImageRecord:
    try:
        return ImageRecord(int(data["id"]), str(data["path"]), int(data["width"]), int(data["height"]),
                           int(data["size"]), str(data["hash"]))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where} holds an image entry that is not an influal image record: {data!r}") from None
