"""Rewrite one benchmark's marked block inside docs/benchmarks.md, leaving every other section alone."""

from __future__ import annotations

from pathlib import Path

from influal.io import atomic_write_text


def update_docs(path: Path, block: str, section: str, begin: str, end: str) -> None:
    """Replace the text between ``begin`` and ``end`` (markers included in ``block``); if the markers are
    missing, put the block under ``section`` (added at the end of the file when absent)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    elif section in text:
        head, tail = text.split(section, 1)
        text = head + section + "\n\n" + block + "\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n\n" + block + "\n"
    atomic_write_text(path, text)
