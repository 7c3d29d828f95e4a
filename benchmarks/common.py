"""What the experiment benchmarks share: run (or resume) timed, name the command, rewrite their docs block."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from influal.app.run import run_experiment
from influal.core.io import atomic_write_text
from influal.core.runtime import tune_allocator


def run_timed(config, out: Path, *, fresh: bool, threads: int | None) -> float:
    """Run (or resume) the experiment under ``out`` with ``threads`` torch threads; returns the wall seconds."""
    tune_allocator()  # as the influal command does
    if threads:
        torch.set_num_threads(threads)
    if fresh and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    run_experiment(config, out, log=lambda m: print(m, file=sys.stderr, flush=True))
    return time.perf_counter() - t0


def invocation(module: str, argv: list[str] | None) -> str:
    """The command line that ran ``module`` (``argv=[]`` means it was called by ``benchmarks/run_all.py``)."""
    args = argv if argv is not None else sys.argv[1:]
    return f"python -m {module}" + (" " + shlex.join(args) if args else "")


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
