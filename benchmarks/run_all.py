"""Run every benchmark, or the named ones: ``python -m benchmarks.run_all [NAME ...] [--list]``.

A benchmark is a module in this folder with ``main(argv: list[str] | None) -> int``; add it to ``BENCHMARKS``.
``make bench`` runs them all with their default arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# (name, module): run in this order by `make bench`.
BENCHMARKS: list[tuple[str, str]] = [
    ("influence_engine", "benchmarks.influence_engine"),
    ("label_efficiency", "benchmarks.label_efficiency"),
    ("detection", "benchmarks.detection"),
]


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(names)})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    status = 0
    for name, module in BENCHMARKS:
        if args.names and name not in args.names:
            continue
        print(f"== benchmark {name}", flush=True)
        t0 = time.perf_counter()
        code = importlib.import_module(module).main([])
        print(f"== {name}: exit {code} after {time.perf_counter() - t0:.0f}s", flush=True)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main())
