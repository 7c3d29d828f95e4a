"""Process-level tuning that an application (influal's CLI, its benchmarks) applies once at start-up.

glibc's allocator returns freed memory to the OS as soon as the top of its heap is free, and serves large
requests with fresh ``mmap`` pages. A CPU pass over a pool allocates and frees the same ~100 MB of batch
buffers for every batch, so each batch then pays for its pages again (page faults): measured on the influence
engine's scoring pass (small CNN, 4000 items, 2 threads), 0.54-0.56 s with glibc's defaults against 0.40 s
with the settings below, at the same peak memory (docs/benchmarks.md). PyTorch's CPU performance guide makes
the same point and suggests jemalloc or tcmalloc; this needs no extra library.

A library should not change its host's allocator behind its back, so the Python API never calls this by
itself: call :func:`tune_allocator` in your own program if you want the same behaviour.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2 ** 20  # glibc's largest: requests below it come from the heap and are reused
TRIM_THRESHOLD = 2 ** 30  # free memory at the top of the heap is kept up to 1 GiB before it is returned

_applied: bool | None = None


def tune_allocator() -> bool:
    """Keep freed batch buffers for reuse instead of handing them back to the OS (glibc on Linux only).

    Does nothing (returns False) elsewhere, when ``INFLUAL_TUNE_ALLOCATOR=0``, or when the user already set
    ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_``. Idempotent; returns whether the settings apply.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("INFLUAL_TUNE_ALLOCATOR", "1") == "0":
        return False
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied


def allocator_tuned() -> bool:
    """Whether :func:`tune_allocator` has applied its settings in this process."""
    return bool(_applied)
