"""Label-efficiency benchmark: the offline ``mnist5k-bench`` preset, then its table, AUBC and savings.

    python -m benchmarks.label_efficiency                 # the preset, results/bench/label_efficiency
    python -m benchmarks.label_efficiency --strategies isal --solver cg --scope last --out results/bench/isal-cg

Runs (or resumes) the experiment with :func:`influal.loop.run_experiment`, writes ``label_efficiency.json``
beside the usual results (metrics.csv, report.md, curves.png), and rewrites the measured block of the
"## Label efficiency (issue 4)" section of docs/benchmarks.md (between two HTML comment markers; the text
around them is kept). Results of different runs with the same preset and seeds are paired: every strategy of a
seed starts from the same initial set and trains with the same seeds, whatever else runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

from benchmarks.common import invocation, run_timed
from benchmarks.common import update_docs as _update_docs
from influal.cli import _option as parse_option
from influal.core.io import atomic_write_json
from influal.loop.presets import get_preset
from influal.report import (
    aubc_by_seed,
    default_target,
    efficiency_markdown,
    markdown_table,
    mean_std,
    paired_comparison,
    read_metrics_csv,
    savings,
    summarize,
)
from influal.settings import InfluenceConfig

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Label efficiency (issue 4)"
BEGIN, END = "<!-- label-efficiency:begin -->", "<!-- label-efficiency:end -->"
INFLUENCE_FLAGS = ("scope", "solver", "damping", "scale", "lissa_depth", "lissa_repeats", "hvp_batch_size",
                   "reference_size")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.label_efficiency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mnist5k-bench")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "label_efficiency"))
    p.add_argument("--strategies", default=None, help="comma-separated; default: the preset's")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: on a shared 2-core "
                   "machine two threads were measured 8x slower than one)")
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of resuming it")
    p.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    p.add_argument("--compare", nargs="+", metavar="DIR", default=None,
                   help="only analyse: BASE [NAME=DIR ...] pairs the ISAL runs of each DIR with BASE's baselines")
    p.add_argument("--strategy-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="a strategy's own setting (value as JSON, else a string), as influal run's flag")
    for flag in INFLUENCE_FLAGS:
        kind = str if flag in ("scope", "solver") else (float if flag in ("damping", "scale") else int)
        p.add_argument("--" + flag.replace("_", "-"), type=kind, default=None, help="ISAL influence setting")
    return p.parse_args(argv)


def build_config(args):
    preset = get_preset(args.preset)
    overrides = {}
    if args.strategies:
        overrides["strategies"] = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    for name in ("seeds", "rounds"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    influence = {k: getattr(args, k) for k in INFLUENCE_FLAGS if getattr(args, k) is not None}
    settings = {"isal": influence} if influence else {}
    for option in args.strategy_option:
        name, key, value = parse_option(option)
        settings.setdefault(name, {})[key] = value
    if settings:
        overrides["strategy_settings"] = settings
    return preset.config(device="cpu", **overrides)


def compute_seconds(out: Path) -> dict[str, float]:
    """Mean per seed of the summed round timings (train + eval + select) of each strategy, from the states."""
    totals: dict[str, list[float]] = {}
    for path in sorted(out.glob("runs/*/seed*/state.json")):
        data = json.loads(path.read_text())
        totals.setdefault(data["strategy"], []).append(sum(sum(r["timings"].values()) for r in data["rounds"]))
    return {s: sum(v) / len(v) for s, v in totals.items()}


def select_seconds(out: Path) -> dict[str, float]:
    per: dict[str, list[float]] = {}
    for path in sorted(out.glob("runs/*/seed*/state.json")):
        data = json.loads(path.read_text())
        per.setdefault(data["strategy"], []).extend(r["timings"].get("select_s", 0.0) for r in data["rounds"][:-1])
    return {s: sum(v) / max(len(v), 1) for s, v in per.items()}


def analyse(out: Path, metric: str = "accuracy") -> dict:
    rows = read_metrics_csv(out / "metrics.csv")
    summary = summarize(rows, metric)
    per_seed, (lo, hi) = aubc_by_seed(rows, metric)
    target = default_target(summary, "random")
    result = {"summary": summary, "aubc": {s: {"per_seed": v, "mean": mean_std(v.values())[0],
                                               "std": mean_std(v.values())[1]} for s, v in per_seed.items()},
              "aubc_range": [lo, hi], "target": target,
              "savings": savings(summary, target) if target is not None else {},
              "paired_vs_random": paired_comparison(rows, metric, "random"),
              "paired_vs_coreset": paired_comparison(rows, metric, "coreset")}
    return result


def verdict(result: dict) -> list[str]:
    lines = []
    aubc = result["aubc"]
    if "isal" not in aubc:
        return lines
    for other, key in (("random", "paired_vs_random"), ("coreset", "paired_vs_coreset")):
        if other not in aubc:
            continue
        st = result[key].get("isal", {}).get("aubc")
        if st is None:
            continue
        above = aubc["isal"]["mean"] > aubc[other]["mean"]
        t = "—" if st["t"] is None else f"{st['t']:.2f}"
        p = "—" if st["p"] is None else f"{st['p']:.3f}"
        lines.append(f"- ISAL's AUBC {'is above' if above else 'is NOT above'} {other}'s: "
                     f"{aubc['isal']['mean'] * 100:.2f}% vs {aubc[other]['mean'] * 100:.2f}% "
                     f"(paired Δ {st['mean'] * 100:+.2f} ± {st['std'] * 100:.2f} pp, t = {t}, p = {p}, "
                     f"W/T/L {st['wins']}/{st['ties']}/{st['losses']} over {st['n']} seeds)")
    return lines


def markdown_block(config, result: dict, out: Path, command: str, wall: float, threads: int) -> str:
    rows = read_metrics_csv(out / "metrics.csv")
    seeds = ", ".join(map(str, config.seed_list))
    inf = InfluenceConfig.from_dict(config.strategy_settings.get("isal", InfluenceConfig().to_dict()))
    compute = compute_seconds(out)
    selects = select_seconds(out)
    lines = [BEGIN, "",
             f"Command: {command}  ",
             f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs), no GPU; "
             f"torch {torch.__version__}, {threads} intra-op thread(s); Python {platform.python_version()}  ",
             f"Date: {dt.date.today().isoformat()}; wall time of this invocation {wall / 60:.1f} min "
             "(a resumed run only counts what it computed)  ",
             f"Setting: {config.dataset} (pool 3500, reference/validation 500, test 1000), model {config.model}, "
             f"{config.initial} random + {config.budget} per round, {config.rounds} rounds, seeds {seeds}; training "
             f"{config.train.epochs} epochs SGD lr {config.train.lr}, batch {config.train.batch_size}; ISAL: scope "
             f"{inf.scope}, solver {inf.solver}, damping {inf.damping}, scale {inf.scale}, LiSSA "
             f"{inf.lissa_repeats}x{inf.lissa_depth}, HVP batch {inf.hvp_batch_size}, reference set "
             f"{inf.reference_size or 'all 500'}", "",
             "Test accuracy (%, mean ± std over seeds) by labels:", "",
             markdown_table(summarize(rows, "accuracy"), "accuracy"), ""]
    lines += [ln.replace("## ", "### ", 1) if ln.startswith("## ") else ln
              for ln in efficiency_markdown(rows, "accuracy").splitlines()]
    lines += ["", "Goal check:", ""] + (verdict(result) or ["- (ISAL or a baseline was not run)"])
    lines += ["", "Compute per seed (train + evaluate + select, summed over rounds) and mean selection time per round:",
              "", "| strategy | compute per seed (s) | selection per round (s) |", "|---|---|---|"]
    for s in compute:
        lines.append(f"| {s} | {compute[s]:.0f} | {selects.get(s, 0.0):.2f} |")
    lines += ["", END]
    return "\n".join(lines)


def update_docs(path: Path, block: str) -> None:
    _update_docs(path, block, SECTION, BEGIN, END)


def compare_variants(base: Path, variants: list[tuple[str, Path]], metric: str = "accuracy") -> str:
    """Markdown table: each variant folder's ``isal`` runs paired (same seeds) with ``base``'s strategies.

    Every run of the same preset and seed starts from the same initial set and trains with the same seeds, so
    ISAL variants run in separate folders compare seed by seed with the baselines of the main run.
    """
    base_rows = read_metrics_csv(base / "metrics.csv")
    lines = ["| ISAL variant | AUBC (%) | Δ vs random (pp) | W/T/L | Δ vs coreset (pp) | W/T/L | labels to random's "
             "final | saving |", "|---|---|---|---|---|---|---|---|"]
    target = default_target(summarize(base_rows, metric), "random")
    for name, folder in variants:
        rows = [dict(r, strategy=name) for r in read_metrics_csv(folder / "metrics.csv") if r["strategy"] == "isal"]
        merged = [r for r in base_rows if r["strategy"] != name] + rows
        per_seed, _ = aubc_by_seed(merged, metric)
        mean, std = mean_std(per_seed[name].values())
        cells = [name, f"{mean * 100:.2f} ± {std * 100:.2f}"]
        for other in ("random", "coreset"):
            st = paired_comparison(merged, metric, other).get(name, {}).get("aubc")
            cells += (["—", "—"] if st is None or other not in per_seed else
                      [f"{st['mean'] * 100:+.2f} ± {st['std'] * 100:.2f}", f"{st['wins']}/{st['ties']}/{st['losses']}"])
        saved = savings(summarize(merged, metric), target)[name] if target is not None else {"labels": None}
        cells += ["not reached" if saved["labels"] is None else f"{saved['labels']:.0f}",
                  "—" if saved.get("saving_pct") is None else f"{saved['saving_pct']:+.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        base, *variants = args.compare
        pairs = [(v.split("=", 1)[0], Path(v.split("=", 1)[1])) if "=" in v else (Path(v).name, Path(v))
                 for v in variants]
        print(compare_variants(Path(base), pairs))
        return 0
    config = build_config(args)
    out = Path(args.out)
    wall = run_timed(config, out, fresh=args.fresh, threads=args.threads)
    result = analyse(out)
    result.update(wall_s=wall, compute_s=compute_seconds(out), select_s=select_seconds(out),
                  config=config.to_dict())
    atomic_write_json(out / "label_efficiency.json", result)
    command = invocation("benchmarks.label_efficiency", argv)
    command = f"`{command}`"
    if argv == []:  # called by benchmarks/run_all.py with the defaults
        command = ("`python -m benchmarks.label_efficiency` (run by `make bench`; alone also "
                   "`python -m benchmarks.run_all label_efficiency`)")
    block = markdown_block(config, result, out, command, wall, torch.get_num_threads())
    print(block)
    if not args.no_docs:
        update_docs(Path(args.docs), block)
        print(f"updated {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
