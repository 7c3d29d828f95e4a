"""Results: metrics.csv from the saved states, per-round tables (mean ± std over seeds), curves.png."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from .errors import StateError
from .io import atomic_write_bytes, atomic_write_text, read_json

BASE_COLUMNS = ["strategy", "seed", "round", "labeled", "cost"]


def collect_rows(out: Path) -> list[dict]:
    """One row per (strategy, seed, round) from every state file under ``out/runs``."""
    rows = []
    for path in sorted((out / "runs").glob("*/seed*/state.json")):
        data = read_json(path)
        for rec in data["rounds"]:
            row = {"strategy": data["strategy"], "seed": data["seed"], "round": rec["round"],
                   "labeled": rec["labeled"], "cost": rec["cost"]}
            row.update(rec["metrics"])
            row.update({k: v for k, v in rec.get("timings", {}).items()})
            rows.append(row)
    order = {}
    config_path = out / "config.json"
    if config_path.exists():
        order = {name: i for i, name in enumerate(read_json(config_path).get("strategies", []))}
    rows.sort(key=lambda r: (order.get(r["strategy"], len(order)), r["strategy"], r["seed"], r["round"]))
    return rows


def write_metrics_csv(rows: list[dict], path: Path) -> None:
    columns = list(BASE_COLUMNS)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k, "")) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _fmt(value):
    return repr(value) if isinstance(value, float) else value


def read_metrics_csv(path: Path) -> list[dict]:
    if not path.exists():
        raise StateError(f"{path} does not exist; run an experiment first (influal run ... --out {path.parent})")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not set(BASE_COLUMNS) <= set(rows[0]):
        raise StateError(f"{path} lacks the columns {', '.join(BASE_COLUMNS)}")
    for row in rows:
        for key, value in list(row.items()):
            if key == "strategy":
                continue
            try:
                row[key] = int(value) if key in ("seed", "round") else float(value)
            except (TypeError, ValueError):
                row[key] = float("nan")
    return rows


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def summarize(rows: list[dict], metric: str) -> dict[str, list[dict]]:
    """Per strategy, per round: mean labeled / cost, and mean ± sample std of ``metric`` over seeds."""
    groups: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[row["strategy"]][int(row["round"])].append(row)
    out = {}
    for strategy, by_round in groups.items():
        out[strategy] = []
        for r in sorted(by_round):
            group = by_round[r]
            mean, std = mean_std(float(g.get(metric, float("nan"))) for g in group)
            out[strategy].append({"round": r, "labeled": mean_std(float(g["labeled"]) for g in group)[0],
                                  "cost": mean_std(float(g["cost"]) for g in group)[0],
                                  "mean": mean, "std": std, "n": len(group)})
    return out


def markdown_table(summary: dict[str, list[dict]], metric: str, scale: float = 100.0) -> str:
    """Rows: strategies; columns: rounds (labeled count); cells: mean ± std of the metric (in % by default)."""
    rounds = sorted({p["round"] for pts in summary.values() for p in pts})
    header_counts = {}
    for pts in summary.values():
        for p in pts:
            header_counts.setdefault(p["round"], p["labeled"])
    head = "| strategy | " + " | ".join(f"{int(round(header_counts[r]))}" for r in rounds) + " |"
    sep = "|---|" + "---|" * len(rounds)
    lines = [head, sep]
    for strategy, pts in summary.items():
        by_round = {p["round"]: p for p in pts}
        cells = []
        for r in rounds:
            p = by_round.get(r)
            cells.append("" if p is None else f"{p['mean'] * scale:.2f} ± {p['std'] * scale:.2f}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(summary: dict[str, list[dict]], metric: str, path: Path, x: str = "cost",
                xlabel: str = "labels", scale: float = 100.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for strategy, pts in summary.items():
        xs = [p[x] for p in pts]
        mean = [p["mean"] * scale for p in pts]
        std = [p["std"] * scale for p in pts]
        line, = ax.plot(xs, mean, marker="o", label=strategy)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)" if scale == 100.0 else metric)
    ax.grid(alpha=0.3)
    ax.legend(title="mean, band ±1 std over seeds", title_fontsize="small", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ---- label efficiency: area under the budget curve, labels to reach a target, paired comparisons ----------------
#
# Curves are (x, y) points per round with x = the ``cost`` column (labels for classification, ground-truth boxes
# for detection) and y = the metric, as fractions (accuracy 0..1).


def aubc(xs: list[float], ys: list[float], lo: float | None = None, hi: float | None = None) -> float:
    """Area under the budget curve, normalised by the x range: (1 / (hi - lo)) ∫_lo^hi y dx.

    The curve is the piecewise-linear interpolation of the points (the trapezoid rule), so the AUBC is the
    mean of the metric over the budget range [lo, hi] (default: the first to the last x), in the metric's units.
    A single point (hi == lo) gives its y. ``lo``/``hi`` must lie within the points' x range.
    """
    pts = sorted(zip(xs, ys))
    if not pts:
        return float("nan")
    lo = pts[0][0] if lo is None else lo
    hi = pts[-1][0] if hi is None else hi
    if lo < pts[0][0] - 1e-9 or hi > pts[-1][0] + 1e-9 or hi < lo:
        raise ValueError(f"AUBC range [{lo}, {hi}] is outside the curve's x range [{pts[0][0]}, {pts[-1][0]}]")
    if hi == lo:
        return _interp(pts, lo)
    grid = [lo] + [x for x, _ in pts if lo < x < hi] + [hi]
    vals = [_interp(pts, x) for x in grid]
    area = sum((grid[i + 1] - grid[i]) * (vals[i] + vals[i + 1]) / 2 for i in range(len(grid) - 1))
    return area / (hi - lo)


def _interp(pts: list[tuple[float, float]], x: float) -> float:
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1] if x <= pts[0][0] else pts[-1][1]


def labels_to_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """The smallest x at which the piecewise-linear curve first reaches ``target`` (None if it never does)."""
    pts = sorted(zip(xs, ys))
    for i, (x, y) in enumerate(pts):
        if y >= target:
            if i == 0:
                return x
            x0, y0 = pts[i - 1]
            return x0 + (x - x0) * (target - y0) / (y - y0)
    return None


def seed_curves(rows: list[dict], metric: str, x: str = "cost") -> dict[str, dict[int, list[tuple[float, float]]]]:
    """Per strategy (in order of first appearance) and seed, the (x, metric) points sorted by round."""
    out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = float(row.get(metric, float("nan")))
        if not math.isnan(value):
            out[row["strategy"]][int(row["seed"])].append((int(row["round"]), float(row[x]), value))
    return {s: {seed: [(px, py) for _, px, py in sorted(pts)] for seed, pts in v.items()} for s, v in out.items()}


def common_range(curves: dict[str, dict[int, list[tuple[float, float]]]]) -> tuple[float, float]:
    """The x range every curve covers: [max of first x, min of last x]."""
    firsts = [pts[0][0] for per_seed in curves.values() for pts in per_seed.values() if pts]
    lasts = [pts[-1][0] for per_seed in curves.values() for pts in per_seed.values() if pts]
    return max(firsts), min(lasts)


def aubc_by_seed(rows: list[dict], metric: str, x: str = "cost") -> tuple[dict[str, dict[int, float]], tuple]:
    """Per strategy and seed, the AUBC over the x range that every run covers (so all are comparable)."""
    curves = seed_curves(rows, metric, x)
    if not curves:
        return {}, (float("nan"), float("nan"))
    lo, hi = common_range(curves)
    if hi < lo:
        raise StateError(f"the runs in metrics.csv share no budget range (from {lo} to {hi}); finish the runs first")
    return {s: {seed: aubc([p[0] for p in pts], [p[1] for p in pts], lo, hi) for seed, pts in per_seed.items()}
            for s, per_seed in curves.items()}, (lo, hi)


def savings(summary: dict[str, list[dict]], target: float, baseline: str = "random",
            x: str = "cost") -> dict[str, dict]:
    """Per strategy: the labels its mean curve needs to reach ``target`` and the saving against ``baseline`` in %.

    saving = (labels_baseline - labels_strategy) / labels_baseline · 100; None where either never reaches it.
    """
    need = {s: labels_to_reach([p[x] for p in pts], [p["mean"] for p in pts], target) for s, pts in summary.items()}
    base = need.get(baseline)
    out = {}
    for s, labels in need.items():
        saving = None
        if labels is not None and base:
            saving = (base - labels) / base * 100.0
        out[s] = {"labels": labels, "saving_pct": saving}
    return out


def default_target(summary: dict[str, list[dict]], baseline: str = "random") -> float | None:
    """The baseline's final mean metric: 'how many labels does each strategy need to match random's result?'"""
    pts = summary.get(baseline)
    return pts[-1]["mean"] if pts else None


def paired_stats(diffs: list[float]) -> dict:
    """Mean, sample std, paired t statistic, its two-sided p (Student t, n-1 dof), and the sign test counts."""
    d = [v for v in diffs if not math.isnan(v)]
    n = len(d)
    mean, std = mean_std(d)
    wins, losses = sum(v > 0 for v in d), sum(v < 0 for v in d)
    t = p = None
    if n >= 2 and std > 0:
        from scipy import stats

        t = mean / (std / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(t), n - 1))
    k, m = min(wins, losses), wins + losses
    sign_p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m) if m else 1.0
    return {"n": n, "mean": mean, "std": std, "t": t, "p": p, "wins": wins, "ties": n - wins - losses,
            "losses": losses, "sign_p": sign_p}


def paired_comparison(rows: list[dict], metric: str, baseline: str = "random") -> dict[str, dict]:
    """Every strategy against ``baseline`` on the same seeds (same initial set): per round and on the AUBC.

    Returns ``{strategy: {"rounds": {round: paired_stats}, "aubc": paired_stats}}`` of the differences
    strategy - baseline (positive = better than the baseline).
    """
    by_key = {(r["strategy"], int(r["seed"]), int(r["round"])): float(r.get(metric, float("nan"))) for r in rows}
    per_seed, _ = aubc_by_seed(rows, metric)
    out = {}
    if baseline not in per_seed:
        return out
    for s in per_seed:
        if s == baseline:
            continue
        rounds = sorted({k[2] for k in by_key if k[0] == s})
        out[s] = {"rounds": {}, "aubc": paired_stats([per_seed[s][k] - per_seed[baseline][k]
                                                      for k in per_seed[s] if k in per_seed[baseline]])}
        for r in rounds:
            diffs = [by_key[(s, seed, r)] - by_key[(baseline, seed, r)] for (name, seed, rr) in by_key
                     if name == s and rr == r and (baseline, seed, r) in by_key]
            out[s]["rounds"][r] = paired_stats(diffs)
    return out


def parse_target(value: float | str | None) -> float | None:
    """A target metric given as a fraction (0.9) or in percent (90)."""
    if value is None:
        return None
    value = float(value)
    return value / 100.0 if value > 1.0 else value


def efficiency_markdown(rows: list[dict], metric: str, target: float | None = None, baseline: str = "random",
                        scale: float = 100.0) -> str:
    """The label-efficiency sections of report.md: AUBC, labels to reach the target, paired comparison."""
    summary = summarize(rows, metric)
    try:
        per_seed, (lo, hi) = aubc_by_seed(rows, metric)
    except StateError:  # no budget range common to all runs yet (runs under way; detection seeds differ in boxes)
        return ""
    if not per_seed:
        return ""
    paired = paired_comparison(rows, metric, baseline)
    has_base = baseline in summary
    lines = ["## Area under the budget curve", "",
             f"AUBC = (1 / (x_max - x_min)) ∫ {metric} d(labels), trapezoid rule over the rounds from {lo:g} to "
             f"{hi:g} labels (the range every run covers): the mean {metric} over the budget range, in %. "
             "Computed per seed, then mean ± std." + (f" Paired: the difference to {baseline} on the same seed "
                                                      "(percentage points), Student t over seeds and its two-sided "
                                                      "p, and wins/ties/losses." if has_base else ""), ""]
    head = "| strategy | AUBC (%) |" + (f" Δ vs {baseline} (pp) | t | p | W/T/L |" if has_base else "")
    lines += [head, "|---|---|" + ("---|---|---|---|" if has_base else "")]
    for s, values in per_seed.items():
        mean, std = mean_std(values.values())
        cells = f"| {s} | {mean * scale:.2f} ± {std * scale:.2f} |"
        if has_base:
            st = paired.get(s, {}).get("aubc")
            cells += " baseline | | | |" if st is None else (f" {st['mean'] * scale:+.2f} ± {st['std'] * scale:.2f} | "
                                                      f"{_num(st['t'])} | {_num(st['p'], 3)} | "
                                                      f"{st['wins']}/{st['ties']}/{st['losses']} |")
        lines.append(cells)
    target = default_target(summary, baseline) if target is None else target
    if target is not None:
        why = f"{baseline}'s final mean" if target == default_target(summary, baseline) else "given with --target"
        saved = savings(summary, target, baseline)
        lines += ["", f"## Labels to reach {metric} {target * scale:.2f}%", "",
                  f"Target: {why}. Labels at which the mean curve first reaches it (linear interpolation between "
                  f"rounds); saving = (labels_{baseline} - labels) / labels_{baseline}.", "",
                  f"| strategy | labels | saving vs {baseline} |", "|---|---|---|"]
        for s, v in saved.items():
            labels = "not reached" if v["labels"] is None else f"{v['labels']:.0f}"
            saving = "—" if v["saving_pct"] is None else f"{v['saving_pct']:+.1f}%"
            lines.append(f"| {s} | {labels} | {saving} |")
    if paired:
        rounds = sorted({r for v in paired.values() for r in v["rounds"]})
        labels_at = {p["round"]: p["labeled"] for p in summary[baseline]}
        lines += ["", f"## Paired difference to {baseline} per round", "",
                  f"Mean over seeds of ({metric} - {metric} of {baseline} with the same seed), percentage points; "
                  "W/T/L = seeds better / equal / worse.", "",
                  "| strategy | " + " | ".join(f"{labels_at.get(r, float('nan')):.0f}" for r in rounds) + " |",
                  "|---|" + "---|" * len(rounds)]
        for s, v in paired.items():
            cells = []
            for r in rounds:
                st = v["rounds"].get(r)
                cells.append("" if st is None or st["n"] == 0 else
                             f"{st['mean'] * scale:+.2f} ({st['wins']}/{st['ties']}/{st['losses']})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report_markdown(rows: list[dict], metric: str, target: float | None = None, baseline: str = "random") -> str:
    summary = summarize(rows, metric)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = ["# Active-learning report", "",
             f"{metric} on the test split (%, mean ± std over {len(seeds)} seed(s): {', '.join(map(str, seeds))}), "
             "by number of labeled items:", "", markdown_table(summary, metric), ""]
    if rows:
        lines.append(efficiency_markdown(rows, metric, target, baseline))
    return "\n".join(lines)


def report_from_csv(out: Path, metric: str = "accuracy", plots: bool = True, target: float | None = None,
                    baseline: str = "random") -> str:
    """Regenerate report.md (and curves.png) from ``out/metrics.csv``; returns the markdown."""
    rows = read_metrics_csv(out / "metrics.csv")
    text = report_markdown(rows, metric, target, baseline)
    atomic_write_text(out / "report.md", text)
    if plots and rows:
        plot_curves(summarize(rows, metric), metric, out / "curves.png")
    return text


def write_reports(out: Path, metric: str = "accuracy", plots: bool = True) -> str:
    """metrics.csv from the states, then report.md and curves.png from metrics.csv."""
    out = Path(out)
    write_metrics_csv(collect_rows(out), out / "metrics.csv")
    return report_from_csv(out, metric, plots=plots)


# ---- detection: AP @ ground-truth boxes (the supplement's Tables 4-7) and boxes saved at equal AP ----------------


def boxes_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """Boxes at which a (boxes, AP) curve first reaches ``target``, interpolating linearly between rounds."""
    return labels_to_reach([x for x, _ in points], [y for _, y in points], target)


def box_table_markdown(summary: dict[str, list[dict]], metric: str = "AP") -> str:
    """Per strategy three rows over the rounds, as the supplement: AP, ground-truth boxes, 10k × AP / boxes.

    Means over seeds; AP as a fraction (0..1) like the supplement's tables.
    """
    rounds = sorted({p["round"] for pts in summary.values() for p in pts})
    lines = ["| strategy | row | " + " | ".join(f"round {r}" for r in rounds) + " |",
             "|---|---|" + "---|" * len(rounds)]
    for strategy, pts in summary.items():
        by_round = {p["round"]: p for p in pts}
        cells = {"ap": [], "boxes": [], "ratio": []}
        for r in rounds:
            p = by_round.get(r)
            if p is None:
                cells["ap"].append(""), cells["boxes"].append(""), cells["ratio"].append("")
                continue
            cells["ap"].append(f"{p['mean']:.3f} ± {p['std']:.3f}")
            cells["boxes"].append(f"{p['cost']:.0f}")
            cells["ratio"].append(f"{1e4 * p['mean'] / p['cost']:.4f}" if p["cost"] else "")
        lines.append(f"| {strategy} | {metric} | " + " | ".join(cells["ap"]) + " |")
        lines.append("| | boxes | " + " | ".join(cells["boxes"]) + " |")
        lines.append(f"| | 10k × {metric} / boxes | " + " | ".join(cells["ratio"]) + " |")
    return "\n".join(lines)


def boxes_saved(summary: dict[str, list[dict]], baseline: str = "random") -> dict[str, list[dict]]:
    """For every round of every other strategy: its mean AP and boxes, the boxes the baseline's mean curve needs
    for that AP (linear interpolation; None outside the baseline's range) and the saving in boxes and in %."""
    base = summary.get(baseline)
    if not base:
        return {}
    base_pts = [(p["cost"], p["mean"]) for p in base if not math.isnan(p["mean"])]
    out = {}
    for strategy, pts in summary.items():
        if strategy == baseline:
            continue
        rows = []
        for p in pts:
            need = boxes_to_reach(base_pts, p["mean"]) if not math.isnan(p["mean"]) else None
            if need is not None and p["mean"] < min(y for _, y in base_pts):
                need = None
            saved = None if need is None else need - p["cost"]
            rows.append({"round": p["round"], "ap": p["mean"], "boxes": p["cost"], "baseline_boxes": need,
                         "saved": saved, "saved_pct": None if need in (None, 0) else 100.0 * saved / need})
        out[strategy] = rows
    return out


def boxes_saved_markdown(summary: dict[str, list[dict]], metric: str = "AP", baseline: str = "random") -> str:
    saved = boxes_saved(summary, baseline)
    if not saved:
        return ""
    lines = [f"| strategy | round | {metric} | boxes | {baseline} needs | saved | saved % |",
             "|---|---|---|---|---|---|---|"]
    for strategy, rows in saved.items():
        for row in rows:
            need = "not reached" if row["baseline_boxes"] is None else f"{row['baseline_boxes']:.0f}"
            lines.append(f"| {strategy} | {row['round']} | {row['ap']:.3f} | {row['boxes']:.0f} | {need} | "
                         + ("— | — |" if row["saved"] is None else f"{row['saved']:+.0f} | {row['saved_pct']:+.1f}% |"))
    return "\n".join(lines)


def box_report_markdown(rows: list[dict], metric: str = "AP", baseline: str = "random") -> str:
    """The detection sections: AP @ boxes per round and the boxes saved against ``baseline`` at equal AP."""
    summary = summarize(rows, metric)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = ["## AP @ ground-truth boxes", "",
             f"Mean over {len(seeds)} seed(s) per round: test {metric} (± std), ground-truth boxes in the labeled set, "
             f"and 10k × {metric} / boxes (the supplement's Tables 4-7).", "", box_table_markdown(summary, metric), ""]
    saved = boxes_saved_markdown(summary, metric, baseline)
    if saved:
        lines += [f"## Boxes saved against {baseline} at equal {metric}", "",
                  f"For each round: the boxes {baseline}'s mean curve needs to reach the same {metric} (linear "
                  f"interpolation between its rounds) minus the boxes used; positive = fewer boxes than {baseline}.",
                  "", saved, ""]
    return "\n".join(lines)


def write_box_report(out: Path, metric: str = "AP", baseline: str = "random", plots: bool = True) -> str:
    """Append the detection sections to ``out/report.md`` and plot ``metric`` against boxes in curves.png."""
    out = Path(out)
    rows = read_metrics_csv(out / "metrics.csv")
    text = box_report_markdown(rows, metric, baseline)
    report = out / "report.md"
    base = report.read_text(encoding="utf-8") if report.exists() else ""
    atomic_write_text(report, base.rstrip("\n") + "\n\n" + text)
    if plots and rows:
        plot_curves(summarize(rows, metric), metric, out / "curves.png", xlabel="ground-truth boxes", scale=1.0)
    return text
