"""Atomic file writes: a reader never sees a half-written file, and a kill leaves either the old or the new one.

A write goes to a temporary file ``.<name>.<random>.tmp`` in the same folder, is fsynced, renamed over the target,
and the folder is fsynced so the rename itself survives a crash. A kill between the two leaves a stray temporary
file, which :func:`clean_temporary` removes on the next start.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .faults import fault_point

TEMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"before renaming {path.name}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        fault_point(f"after renaming {path.name}")
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of :func:`atomic_write_bytes`' temporary files."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.is_file()


def clean_temporary(folders: Iterable[Path]) -> list[Path]:
    """Remove the temporary files that an interrupted write left in ``folders`` (recursively); returns them."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in folder.rglob(f".*{TEMP_SUFFIX}"):
            if is_temporary(path):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
