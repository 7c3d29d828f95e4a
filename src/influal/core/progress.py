"""Progress bars that stay quiet when output is not a terminal or when asked to."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_wanted(requested: bool = True) -> bool:
    return requested and sys.stderr.isatty() and os.environ.get("INFLUAL_QUIET", "") == ""


def progress_bar(iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool = True,
                 leave: bool = False) -> Iterable[T]:
    if not progress_wanted(enabled):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)
