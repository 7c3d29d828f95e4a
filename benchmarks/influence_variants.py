"""Influence variants against the baselines, paired by seed, from finished label-efficiency runs (issue 13).

    python -m benchmarks.influence_variants results/bench/i13/base-a results/bench/i13/base-b \\
        isal_batch=results/bench/i13/batch-d001:isal_batch --baselines entropy,margin,coreset,badge

Every argument is a results folder of ``influal run`` / ``python -m benchmarks.label_efficiency`` with the same
preset and seeds (so every strategy of a seed starts from the same initial set and trains with the same seeds):
``DIR`` takes all its strategies under their own names, ``NAME=DIR:STRATEGY`` one strategy renamed (variants of
one strategy run in several folders). A (strategy, seed, round) found twice is an error. Writes
``benchmarks/results/influence_variants[-TAG].json`` and prints the markdown table; ``--docs`` rewrites the block
between ``<!-- influence-variants[-TAG]:begin -->`` and ``:end -->`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import invocation
from influal.core.io import atomic_write_json
from influal.report import (
    aubc_by_seed,
    default_target,
    mean_std,
    paired_comparison,
    read_metrics_csv,
    savings,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]


def load_runs(specs: list[str]) -> list[dict]:
    rows, seen = [], {}
    for spec in specs:
        name, folder, strategy = None, spec, None
        if "=" in spec:
            name, rest = spec.split("=", 1)
            folder, _, strategy = rest.partition(":")
            strategy = strategy or name
        for row in read_metrics_csv(Path(folder) / "metrics.csv"):
            if strategy is not None and row["strategy"] != strategy:
                continue
            row = dict(row, strategy=name or row["strategy"])
            key = (row["strategy"], int(row["seed"]), int(row["round"]))
            if key in seen:
                raise SystemExit(f"{key} is in both {seen[key]} and {folder}: rename one (NAME=DIR:STRATEGY)")
            seen[key] = folder
            rows.append(row)
    return rows


def complete_seeds(rows: list[dict]) -> list[dict]:
    """Only the seeds every strategy finished (all rounds), so the pairing is over the same seeds."""
    last = max(int(r["round"]) for r in rows)
    done: dict[str, set[int]] = {}
    for r in rows:
        if int(r["round"]) == last:
            done.setdefault(r["strategy"], set()).add(int(r["seed"]))
    common = set.intersection(*done.values()) if done else set()
    return [r for r in rows if int(r["seed"]) in common]


def analyse(rows: list[dict], baselines: list[str], metric: str = "accuracy") -> dict:
    per_seed, (lo, hi) = aubc_by_seed(rows, metric)
    summary = summarize(rows, metric)
    target = default_target(summary, "random")
    saved = savings(summary, target) if target is not None else {}
    present = [b for b in baselines if b in per_seed]
    best = max(present, key=lambda b: mean_std(per_seed[b].values())[0]) if present else None
    vs_random = paired_comparison(rows, metric, "random")
    vs_best = paired_comparison(rows, metric, best) if best else {}
    out = {"seeds": sorted({int(r["seed"]) for r in rows}), "aubc_range": [lo, hi], "target": target,
           "best_baseline": best, "strategies": {}}
    for s in sorted(per_seed, key=lambda k: -mean_std(per_seed[k].values())[0]):
        mean, std = mean_std(per_seed[s].values())
        rounds = vs_random.get(s, {}).get("rounds", {})
        first = rounds.get(1) if rounds else None
        out["strategies"][s] = {
            "aubc_mean": mean, "aubc_std": std, "aubc_per_seed": per_seed[s],
            "vs_random": vs_random.get(s, {}).get("aubc"), "vs_best_baseline": vs_best.get(s, {}).get("aubc"),
            "first_round_vs_random": first, "labels_to_target": saved.get(s, {}).get("labels"),
            "saving_pct": saved.get(s, {}).get("saving_pct")}
    return out


def _paired(st: dict | None) -> str:
    if not st:
        return "—"
    p = "—" if st.get("p") is None else f"{st['p']:.3f}"
    return f"{st['mean'] * 100:+.2f} ± {st['std'] * 100:.2f} ({st['wins']}/{st['ties']}/{st['losses']}, p {p})"


def markdown(result: dict) -> str:
    best = result["best_baseline"]
    lines = [f"Seeds {', '.join(map(str, result['seeds']))}; AUBC over {result['aubc_range'][0]:.0f}-"
             f"{result['aubc_range'][1]:.0f} labels; target = random's final mean accuracy "
             f"{result['target'] * 100:.2f} %; best baseline by mean AUBC: {best}. Paired columns: mean ± std of the "
             "per-seed difference in percentage points (wins/ties/losses, two-sided paired t p).", "",
             f"| strategy | AUBC (%) | Δ vs random | Δ vs {best} | Δ vs random at round 1 | labels to target | "
             "saving vs random |", "|---|---|---|---|---|---|---|"]
    for s, st in result["strategies"].items():
        first = st["first_round_vs_random"]
        first_s = "—" if not first else (f"{first['mean'] * 100:+.2f} ({first['wins']}/{first['ties']}/"
                                         f"{first['losses']})")
        labels = "not reached" if st["labels_to_target"] is None else f"{st['labels_to_target']:.0f}"
        saving = "—" if st["saving_pct"] is None else f"{st['saving_pct']:+.1f} %"
        lines.append(f"| {s} | {st['aubc_mean'] * 100:.2f} ± {st['aubc_std'] * 100:.2f} | {_paired(st['vs_random'])} "
                     f"| {'baseline' if s == best else _paired(st['vs_best_baseline'])} | {first_s} | {labels} | "
                     f"{saving} |")
    return "\n".join(lines)


def detection_markdown(rows: list[dict]) -> str:
    """For detection runs (metric AP, cost in boxes): AP and boxes per round, boxes saved against random at equal
    AP, and the boxes each strategy needs for random's final mean AP (the layout of benchmarks.detection)."""
    from influal.tasks.detection.report import box_table_markdown, boxes_saved_markdown, boxes_to_reach

    summary = summarize(rows, "AP")
    target = summary["random"][-1]["mean"]
    need = {s: boxes_to_reach([(p["cost"], p["mean"]) for p in pts], target) for s, pts in summary.items()}
    lines = [f"Seeds {', '.join(map(str, sorted({int(r['seed']) for r in rows})))}. Test COCO AP (mean ± std), boxes "
             "and 10k × AP / boxes per round:", "", box_table_markdown(summary, "AP"), "",
             "Boxes saved against random at equal AP (random's mean curve interpolated):", "",
             boxes_saved_markdown(summary, "AP", "random"), "",
             f"Boxes to reach random's final mean AP ({target:.3f}):", "", "| strategy | boxes | saved vs random |",
             "|---|---|---|"]
    for s, n in need.items():
        pct = None if n is None or not need.get("random") else 100.0 * (need["random"] - n) / need["random"]
        lines.append(f"| {s} | {'not reached' if n is None else f'{n:.0f}'} | "
                     f"{'—' if pct is None else f'{pct:+.1f} %'} |")
    return "\n".join(lines)


def update_docs(path: Path, tag: str, block: str) -> None:
    begin, end = f"<!-- influence-variants{tag}:begin -->", f"<!-- influence-variants{tag}:end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} block to rewrite; add the two markers first")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n\n{block}\n\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.influence_variants", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="DIR or NAME=DIR:STRATEGY")
    p.add_argument("--baselines", default="entropy,margin,coreset,badge")
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--tag", default="", help="suffix of the JSON file and of the docs markers (e.g. -resnet)")
    p.add_argument("--docs", default=None, help="markdown file whose influence-variants block is rewritten")
    args = p.parse_args(argv)
    rows = complete_seeds(load_runs(args.runs))
    command = invocation("benchmarks.influence_variants", argv if argv is not None else sys.argv[1:])
    if args.metric == "AP":  # detection: the cost is boxes, and savings are counted at equal AP
        result = {"command": command, "summary": summarize(rows, "AP")}
        block = f"Command: `{command}`\n\n" + detection_markdown(rows)
    else:
        result = analyse(rows, [b.strip() for b in args.baselines.split(",") if b.strip()], args.metric)
        result["command"] = command
        block = f"Command: `{command}`\n\n" + markdown(result)
    atomic_write_json(ROOT / "benchmarks" / "results" / f"influence_variants{args.tag}.json", result)
    print(block)
    if args.docs:
        update_docs(Path(args.docs), args.tag, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
