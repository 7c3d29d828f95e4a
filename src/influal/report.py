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
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def report_markdown(rows: list[dict], metric: str) -> str:
    summary = summarize(rows, metric)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [f"# Active-learning report", "",
             f"{metric} on the test split (%, mean ± std over {len(seeds)} seed(s): {', '.join(map(str, seeds))}), "
             "by number of labeled items:", "", markdown_table(summary, metric), ""]
    return "\n".join(lines)


def report_from_csv(out: Path, metric: str = "accuracy", plots: bool = True) -> str:
    """Regenerate report.md (and curves.png) from ``out/metrics.csv``; returns the markdown."""
    rows = read_metrics_csv(out / "metrics.csv")
    text = report_markdown(rows, metric)
    atomic_write_text(out / "report.md", text)
    if plots and rows:
        plot_curves(summarize(rows, metric), metric, out / "curves.png")
    return text


def write_reports(out: Path, metric: str = "accuracy", plots: bool = True) -> str:
    """metrics.csv from the states, then report.md and curves.png from metrics.csv."""
    out = Path(out)
    write_metrics_csv(collect_rows(out), out / "metrics.csv")
    return report_from_csv(out, metric, plots=plots)
