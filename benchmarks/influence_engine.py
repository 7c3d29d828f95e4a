"""Influence-engine benchmarks (issue 3): scoring speed, scaling, solver accuracy, fidelity.

``python -m benchmarks.influence_engine [scoring scaling solvers fidelity]`` runs them and writes
``benchmarks/results/<name>.json``; the same figures print as JSON with ``influal bench NAME --json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from influal.bench import BENCHMARKS
from influal.core.io import atomic_write_json
from influal.core.runtime import tune_allocator

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.influence_engine", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help=", ".join(BENCHMARKS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    tune_allocator()  # as the influal command does
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in args.names or list(BENCHMARKS):
        t0 = time.perf_counter()
        result = BENCHMARKS[name]()
        result["wall_s"] = time.perf_counter() - t0
        result["date"] = time.strftime("%Y-%m-%d")
        atomic_write_json(RESULTS / f"{name}.json", result)
        print(json.dumps(result, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
