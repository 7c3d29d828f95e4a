"""What a round costs besides training and selection: saving the state and rewriting metrics.csv and report.md.

    python -m benchmarks.round_overhead [--strategies 9] [--seeds 5] [--rounds 20]

A run of ``strategies × seeds × rounds`` rounds is replayed on disk with real, checked state files (pool 3,500,
initial 100, budget 100: the shapes of the demo; the metrics are synthetic, which costs the same to report), in the
loop's order (every round of one strategy and seed, then the next). After each round the state is saved and the
report rewritten, once as influal did before (``write_reports``: every state file re-read and checked, metrics.csv
written and read back) and once with :class:`influal.report.RoundReport` (only the changed state re-read), in two
separate folders, timed. Prints the total over the run and the cost of the last round's report for both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAMES = ["isal", "random", "coreset", "entropy", "margin", "least_confidence", "bald", "badge", "learning_loss"]


def replay(out: Path, strategies: int, seeds: int, rounds: int, incremental: bool) -> dict:
    from influal.core.io import atomic_write_json
    from influal.loop.config import ExperimentConfig
    from influal.loop.experiment import state_path
    from influal.loop.state import ActiveState, RoundRecord, initial_labeled
    from influal.report import RoundReport, write_reports

    pool = 3500
    config = ExperimentConfig(strategies=tuple(NAMES[:strategies]), seeds=seeds, rounds=rounds, initial=100,
                              budget=100 if 100 + 100 * (rounds - 1) <= pool else (pool - 100) // rounds)
    atomic_write_json(out / "config.json", {**config.to_dict(), "provenance": {"data": {"pool": pool}}})
    rng = np.random.default_rng(0)
    report = None
    save_s, report_s, last = 0.0, 0.0, 0.0
    for seed in config.seed_list:
        for strategy in config.strategies:
            state = ActiveState.start(strategy, seed, initial_labeled(pool, config.initial, seed), pool,
                                      config.experiment_id(strategy))
            for r in range(rounds):
                unlabeled = state.unlabeled_array()
                picked = [] if r == rounds - 1 else sorted(int(i) for i in rng.choice(unlabeled, config.budget,
                                                                                       replace=False))
                state.add_round(RoundRecord(round=r, labeled=len(state.labeled_ids), cost=float(len(state.labeled_ids)),
                                            metrics={"accuracy": float(rng.uniform(0.5, 1.0)), "loss": 1.0},
                                            selected=picked, timings={"train_s": 1.0, "eval_s": 0.1}))
                t0 = time.perf_counter()
                state.save(state_path(out, strategy, seed))
                save_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                if incremental:
                    if report is None:
                        report = RoundReport(out)
                    report.write(plots=False)
                else:
                    write_reports(out, plots=False)
                last = time.perf_counter() - t0
                report_s += last
    return {"rounds": strategies * seeds * rounds, "save_s": save_s, "report_s": report_s, "last_report_s": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.round_overhead", description=__doc__)
    parser.add_argument("--strategies", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    results = {}
    for name, incremental in (("every state re-read (before)", False), ("RoundReport (changed states only)", True)):
        tmp = Path(tempfile.mkdtemp(prefix="influal-overhead-"))
        try:
            results[name] = replay(tmp, args.strategies, args.seeds, args.rounds, incremental)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r = results[name]
        print(f"{name}: {r['rounds']} rounds; state saves {r['save_s']:.2f} s in all; reports {r['report_s']:.2f} s "
              f"in all, {r['report_s'] / r['rounds'] * 1000:.1f} ms per round on average, the last round's "
              f"{r['last_report_s'] * 1000:.1f} ms", flush=True)
    out = Path(__file__).resolve().parent / "results" / "round_overhead.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
