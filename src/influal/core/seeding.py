"""Stable seeds derived from names and numbers, independent of PYTHONHASHSEED and of process history."""

from __future__ import annotations

import zlib


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (strings and ints): CRC32 of their ``/``-joined text."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF

