"""Central differences against the exact pass on the weight tensors (issue 15): ``python -m benchmarks.fd_scoring``.

For each model (the peers benchmark's small CNN and ResNet-18 with max-pool, trained on 1,000 mnist5k digits and
cached by ``benchmarks.peers``), s is the reference set's summed gradient v (what ``--solver identity`` solves;
the direction's kind is what matters for the accuracy of a difference along it), and every pool item's g·s is
computed by influal's exact ``layerwise`` pass and by ``fd`` at several steps. Reported per step: the Spearman
correlation and relative error against ``layerwise``, the overlap of the 100 and the 400 best-ranked items, and
the time of each pass next to plain inference in the same (channels-last) layout. The passes run interleaved in
one process (``--repeats`` rounds of inference, layerwise, fd at each step), so the ratios are side by side.
Results: ``benchmarks/results/fd_scoring.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.peers import build_problem, spearman
from influal.influence import InfluenceEngine, grads
from influal.influence.layout import channels_last
from influal.settings import InfluenceConfig

RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """The share of the k lowest of ``a`` that are among the k lowest of ``b`` (ISAL takes the lowest scores)."""
    return len(set(np.argsort(a, kind="stable")[:k]) & set(np.argsort(b, kind="stable")[:k])) / k


def measure(model_name: str, pool: int, steps: list[float], repeats: int) -> dict:
    p = build_problem(model_name, pool)
    engines = {m: InfluenceEngine(p.model, p.task, InfluenceConfig(scope="weights", gs_method=m))
               for m in ("layerwise", "fd")}
    v = engines["layerwise"].reference_gradient(p.data, p.ref_ids)

    def inference():
        with torch.no_grad(), channels_last(p.model):
            for _, x, _ in p.task.batches(p.data, p.pool_ids, 256):
                p.model(x)

    times: dict[str, list[float]] = {"inference": [], "layerwise": [], **{f"fd {h:g}": [] for h in steps}}
    scores: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        times["inference"].append(_time(inference)[0])
        t, scores["layerwise"] = _time(lambda: engines["layerwise"].dots(p.data, p.pool_ids, v))
        times["layerwise"].append(t)
        for h in steps:
            grads.FD_STEP = h  # the module default the engine's fd path reads
            t, scores[f"fd {h:g}"] = _time(lambda: engines["fd"].dots(p.data, p.pool_ids, v))
            times[f"fd {h:g}"].append(t)
    exact = scores["layerwise"]
    med_inf = float(np.median(times["inference"]))
    rows = []
    for name, ts in times.items():
        row = {"pass": name, "seconds": {"min": float(np.min(ts)), "median": float(np.median(ts)),
                                         "max": float(np.max(ts))},
               "x_inference": float(np.median(ts)) / med_inf}
        if name.startswith("fd"):
            s = scores[name]
            row.update({"spearman_vs_layerwise": spearman(s, exact),
                        "relative_error": float(np.linalg.norm(s - exact) / np.linalg.norm(exact)),
                        "top100_overlap": overlap(s, exact, 100), "top400_overlap": overlap(s, exact, 400)})
        rows.append(row)
    return {"model": model_name, "pool": pool, "scope_params": engines["fd"].scope.numel, "rows": rows}


def table(results: list[dict]) -> str:
    lines = ["| model | pass | seconds (min / median / max) | × inference (CL) | Spearman vs layerwise | "
             "relative error | best 100 shared | best 400 shared |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            t = r["seconds"]
            extra = (f"{r['spearman_vs_layerwise']:.6f} | {r['relative_error']:.2e} | {r['top100_overlap']:.2f} | "
                     f"{r['top400_overlap']:.2f}") if "spearman_vs_layerwise" in r else "– | – | – | –"
            lines.append(f"| {res['model']} | {r['pass']} | {t['min']:.2f} / {t['median']:.2f} / {t['max']:.2f} | "
                         f"{r['x_inference']:.2f} | {extra} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fd_scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,resnet18-maxpool")
    parser.add_argument("--pool", type=int, default=4000)
    parser.add_argument("--steps", default="1e-4,3e-5,2e-5,1e-5,3e-6")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "fd_scoring.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    default_step = grads.FD_STEP
    steps = [float(x) for x in args.steps.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        results = [measure(m, args.pool, steps, args.repeats) for m in args.models.split(",")]
    finally:
        grads.FD_STEP = default_step  # measure() sets the module default per step
    save(args.out, {"benchmark": "fd_scoring", "started": started, "threads": args.threads,
                    "default_step": default_step, "results": results})
    print(table(results))
    return 0


def save(path: str, out: dict) -> None:
    """Write a benchmark's results as JSON, with the load average at the end of the run."""
    out = {**out, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
