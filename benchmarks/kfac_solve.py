"""EK-FAC and K-FAC against a converged CG solve on the weight tensors (issue 15): ``python -m benchmarks.kfac_solve``.

For each model (the peers benchmark's small CNN and ResNet-18 with max-pool, trained on 1,000 mnist5k digits and
cached by ``benchmarks.peers``; reference 500 summed, λ = 0.01): s_test on every weight tensor by CG on the true
Hessian (the reference, run once, to ``cg_tol``), by ``ekfac`` and ``kfac`` (closed form on a Kronecker-factored
Gauss-Newton matrix) and by ``identity`` (s = v), and the scoring pass (``layerwise`` and ``fd``) next to plain
inference. The K-FAC solves and the passes run interleaved ``--repeats`` times in one process, so their ratios are
side by side. Accuracy of each approximate s against CG's: the cosine of the two s, and the Spearman correlation
and the overlap of the 100 best-ranked of the pool's scores (exact ``layerwise`` scoring with each s).
Results: ``benchmarks/results/kfac_solve.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.fd_scoring import _time, overlap, save
from benchmarks.peers import build_problem, spearman
from influal.core.errors import SolverError
from influal.influence import InfluenceEngine
from influal.influence.layout import channels_last
from influal.settings import InfluenceConfig

RESULTS = Path(__file__).resolve().parent / "results"
APPROXIMATE = ("ekfac", "kfac", "identity")


def _stats(ts: list[float]) -> dict[str, float]:
    return {"min": float(np.min(ts)), "median": float(np.median(ts)), "max": float(np.max(ts))}


def measure(model_name: str, pool: int, repeats: int, damping: float, cg_max_iter: int) -> dict:
    p = build_problem(model_name, pool)

    def engine(solver: str, gs: str = "layerwise") -> InfluenceEngine:
        return InfluenceEngine(p.model, p.task, InfluenceConfig(scope="weights", solver=solver, damping=damping,
                                                                gs_method=gs, cg_max_iter=cg_max_iter))

    base = engine("cg")
    v = base.reference_gradient(p.data, p.ref_ids)
    failure = None
    try:
        t_cg, cg = _time(lambda: base.solve(v, p.data, p.labeled_ids, torch.Generator().manual_seed(0)))
    except SolverError as exc:  # the weights of a network whose loss is not convex there at this damping
        t_cg, cg, failure = None, None, str(exc)
    s_score = v if cg is None else cg.s  # what the scoring passes are timed with
    exact = None if cg is None else -base.dots(p.data, p.pool_ids, cg.s)

    def inference():
        with torch.no_grad(), channels_last(p.model):
            for _, x, _ in p.task.batches(p.data, p.pool_ids, 256):
                p.model(x)

    engines = {name: engine(name) for name in APPROXIMATE}
    fd = engine("cg", "fd")
    times: dict[str, list[float]] = {"inference": [], "scoring layerwise": [], "scoring fd": [],
                                     **{f"s_test {n}": [] for n in APPROXIMATE}}
    solved = {}
    for _ in range(repeats):
        times["inference"].append(_time(inference)[0])
        times["scoring layerwise"].append(_time(lambda: base.dots(p.data, p.pool_ids, s_score))[0])
        times["scoring fd"].append(_time(lambda: fd.dots(p.data, p.pool_ids, s_score))[0])
        for name, eng in engines.items():
            t, solved[name] = _time(lambda: eng.solve(v, p.data, p.labeled_ids, torch.Generator().manual_seed(0)))
            times[f"s_test {name}"].append(t)
    accuracy = {}
    for name, res in solved.items():
        info = {k: val for k, val in res.info.items() if isinstance(val, (int, float, str, bool))}
        if cg is None:
            accuracy[name] = {"cosine_s_vs_cg": None, "spearman_vs_cg": None, "top100_overlap": None, "info": info}
            continue
        scores = -base.dots(p.data, p.pool_ids, res.s)
        accuracy[name] = {"cosine_s_vs_cg": float(res.s @ cg.s / (res.s.norm() * cg.s.norm())),
                          "spearman_vs_cg": spearman(scores, exact), "top100_overlap": overlap(scores, exact, 100),
                          "info": info}
    med = {k: float(np.median(ts)) for k, ts in times.items()}
    return {"model": model_name, "pool": pool, "scope_params": base.scope.numel, "damping": damping,
            "cg": {"failed": failure} if cg is None else
                  {"seconds": t_cg, "iterations": cg.info["iterations"], "final_residual": cg.info["final_residual"],
                   "converged": cg.info["converged"]},
            "seconds": {k: _stats(ts) for k, ts in times.items()},
            "s_test_over_scoring": {n: {"layerwise": med[f"s_test {n}"] / med["scoring layerwise"],
                                        "fd": med[f"s_test {n}"] / med["scoring fd"]} for n in APPROXIMATE},
            "cg_over_scoring": None if cg is None else {"layerwise": t_cg / med["scoring layerwise"],
                                                        "fd": t_cg / med["scoring fd"]},
            "accuracy": accuracy}


def table(results: list[dict]) -> str:
    lines = ["| model | s_test | seconds (min / median / max) | ÷ scoring (layerwise / fd) | cosine to CG's s | "
             "Spearman vs CG | best 100 shared |", "|---|---|---|---|---|---|---|"]
    for res in results:
        cg, head = res["cg"], f"| {res['model']} ({res['scope_params']:,} weights) |"
        if "failed" in cg:
            lines.append(f"{head} CG: {cg['failed'].split(':')[0]} | – | – | – | – | – |")
        else:
            lines.append(f"{head} CG, {cg['iterations']} it., residual {cg['final_residual']:.1e} | "
                         f"{cg['seconds']:.2f} | {res['cg_over_scoring']['layerwise']:.1f} / "
                         f"{res['cg_over_scoring']['fd']:.1f} | 1 | 1 | 1 |")
        for name in APPROXIMATE:
            t, r, a = res["seconds"][f"s_test {name}"], res["s_test_over_scoring"][name], res["accuracy"][name]
            acc = " | ".join("–" if a[k] is None else f"{a[k]:.{d}f}"
                             for k, d in (("cosine_s_vs_cg", 3), ("spearman_vs_cg", 3), ("top100_overlap", 2)))
            lines.append(f"| | {name} | {t['min']:.2f} / {t['median']:.2f} / {t['max']:.2f} | {r['layerwise']:.2f} / "
                         f"{r['fd']:.2f} | {acc} |")
        for name in ("scoring layerwise", "scoring fd", "inference"):
            t = res["seconds"][name]
            lines.append(f"| | ({name}) | {t['min']:.2f} / {t['median']:.2f} / {t['max']:.2f} | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kfac_solve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,resnet18-maxpool")
    parser.add_argument("--pool", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--cg-max-iter", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "kfac_solve.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = [measure(m, args.pool, args.repeats, args.damping, args.cg_max_iter) for m in args.models.split(",")]
    save(args.out, {"benchmark": "kfac_solve", "started": started, "threads": args.threads, "results": results})
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
