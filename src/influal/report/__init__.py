"""Results: metrics.csv from the saved states, per-round tables (mean ± std over seeds), label efficiency
(AUBC, labels to reach a target, paired comparisons), curves.png; the task's own section comes from its plug-in.

Task-blind: the metric, what the cost counts (labels, boxes), how the metric is shown (in %, or as a fraction)
and any extra section come from the task plug-in named in config.json.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import StateError
from ..core.io import atomic_write_bytes, atomic_write_text, read_json
from ..core.stats import aubc, labels_to_reach, mean_std, paired_stats, summarize
from ..loop.config import ExperimentConfig
from ..loop.experiment import state_path
from ..loop.state import load_state
from ..tasks import get_task

BASE_COLUMNS = ["strategy", "seed", "round", "labeled", "cost"]


def _experiment(out: Path) -> tuple[ExperimentConfig, int | None]:
    """The experiment in ``out/config.json`` and its recorded pool size."""
    config_path = out / "config.json"
    try:
        saved = read_json(config_path)
        config = ExperimentConfig.from_dict(saved)
    except FileNotFoundError:
        raise StateError(f"{out} holds no config.json; run an experiment first (influal run ... --out {out})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"{config_path} is not a readable influal config ({type(exc).__name__}: {exc})") from None
    recorded = saved.get("provenance", {}).get("data", {}) if isinstance(saved.get("provenance"), dict) else {}
    return config, recorded.get("pool") if isinstance(recorded.get("pool"), int) else None


def _state_rows(path: Path, config: ExperimentConfig, strategy: str, seed: int, pool: int | None) -> list[dict]:
    state = load_state(path, strategy=strategy, seed=seed, experiment=config.experiment_id(strategy),
                       pool_size=pool, initial=config.initial, budget=config.budget, rounds=config.rounds)
    rows = []
    for rec in state.rounds:
        row = {"strategy": strategy, "seed": seed, "round": rec.round, "labeled": rec.labeled, "cost": rec.cost}
        row.update(rec.metrics)
        row.update(rec.timings)
        rows.append(row)
    return rows


def collect_rows(out: Path) -> list[dict]:
    """One row per (strategy, seed, round) from the state files of the experiment in ``out/config.json``.

    Only the states that belong to it are read (its strategies and seeds, at their own paths), each checked
    (checksum, strategy, seed, experiment, replay); stray files elsewhere under ``runs/`` are ignored.
    """
    return RoundReport(out).rows()


class RoundReport:
    """metrics.csv and report.md kept up to date during a run: after each round it re-reads (and checks) only the
    state files that changed since its last call (by size and modification time), so a round's report costs the
    same at round 1 and at round 900 of a run; curves.png is drawn on request (at the end of a run)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.config, self.pool = _experiment(self.out)
        self._cache: dict[Path, tuple[tuple[int, int], list[dict]]] = {}

    def rows(self) -> list[dict]:
        rows = []
        for strategy in self.config.strategies:
            for seed in self.config.seed_list:
                path = state_path(self.out, strategy, seed)
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                key = (stat.st_mtime_ns, stat.st_size)
                cached = self._cache.get(path)
                if cached is None or cached[0] != key:
                    cached = (key, _state_rows(path, self.config, strategy, seed, self.pool))
                    self._cache[path] = cached
                rows.extend(cached[1])
        return rows

    def write(self, plots: bool = False) -> str:
        rows = self.rows()
        write_metrics_csv(rows, self.out / "metrics.csv")
        style = ReportStyle.of(self.out)
        text = report_markdown(rows, style.metric, None, "random", style)
        atomic_write_text(self.out / "report.md", text)
        if plots and rows:
            plot_curves(summarize(rows, style.metric), style.metric, self.out / "curves.png", xlabel=style.unit,
                        scale=style.scale)
        return text


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
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StateError(f"{path} is not a metrics.csv influal wrote ({type(exc).__name__}); regenerate it with "
                         f"influal run ... --out {path.parent}") from None
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
                        scale: float = 100.0, unit: str = "labels") -> str:
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
    pct = ", in %" if scale == 100.0 else ""
    shown = "(%)" if scale == 100.0 else ""
    lines = ["## Area under the budget curve", "",
             f"AUBC = (1 / (x_max - x_min)) ∫ {metric} d({unit}), trapezoid rule over the rounds from {lo:g} to "
             f"{hi:g} {unit} (the range every run covers): the mean {metric} over the budget range{pct}. "
             "Computed per seed, then mean ± std." + (f" Paired: the difference to {baseline} on the same seed "
                                                      "(percentage points), Student t over seeds and its two-sided "
                                                      "p, and wins/ties/losses." if has_base else ""), ""]
    delta = "(pp)" if scale == 100.0 else ""
    head = f"| strategy | AUBC {shown} |" + (f" Δ vs {baseline} {delta} | t | p | W/T/L |" if has_base else "")
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
        shown_target = f"{target * scale:.2f}%" if scale == 100.0 else f"{target * scale:.3f}"
        lines += ["", f"## {unit.capitalize()} to reach {metric} {shown_target}", "",
                  f"Target: {why}. {unit.capitalize()} at which the mean curve first reaches it (linear interpolation "
                  f"between rounds); saving = ({unit}_{baseline} - {unit}) / {unit}_{baseline}.", "",
                  f"| strategy | {unit} | saving vs {baseline} |", "|---|---|---|"]
        for s, v in saved.items():
            labels = "not reached" if v["labels"] is None else f"{v['labels']:.0f}"
            saving = "—" if v["saving_pct"] is None else f"{v['saving_pct']:+.1f}%"
            lines.append(f"| {s} | {labels} | {saving} |")
    if paired:
        rounds = sorted({r for v in paired.values() for r in v["rounds"]})
        labels_at = {p["round"]: p["labeled"] for p in summary[baseline]}
        points = "percentage points" if scale == 100.0 else f"in {metric} units"
        lines += ["", f"## Paired difference to {baseline} per round", "",
                  f"Mean over seeds of ({metric} - {metric} of {baseline} with the same seed), {points}; columns: "
                  f"labeled items; W/T/L = seeds better / equal / worse.", "",
                  "| strategy | " + " | ".join(f"{labels_at.get(r, float('nan')):.0f}" for r in rounds) + " |",
                  "|---|" + "---|" * len(rounds)]
        for s, v in paired.items():
            cells = []
            for r in rounds:
                st = v["rounds"].get(r)
                cells.append("" if st is None or st["n"] == 0 else
                             f"{st['mean'] * scale:+.{2 if scale == 100.0 else 3}f} "
                             f"({st['wins']}/{st['ties']}/{st['losses']})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class ReportStyle:
    """How a task's results are shown: its metric, what its cost counts, the metric's scale and its section."""

    metric: str = "accuracy"
    unit: str = "labels"
    scale: float = 100.0
    task: str | None = None

    @classmethod
    def of(cls, out: Path) -> "ReportStyle":
        """The style of the task recorded in ``out/config.json`` (classification's if there is none)."""
        task = "classification"
        path = Path(out) / "config.json"
        if path.exists():
            try:
                data = read_json(path)
            except (OSError, ValueError):
                raise StateError(f"{path} is not valid JSON; fix or remove it") from None
            if isinstance(data, dict) and isinstance(data.get("task"), str):
                task = data["task"]
        plugin = get_task(task)
        return cls(plugin.metric, plugin.cost_unit, plugin.metric_scale, task)

    def sections(self, rows: list[dict], metric: str, baseline: str) -> str:
        return get_task(self.task).report_sections(rows, metric, baseline) if self.task else ""


def report_markdown(rows: list[dict], metric: str, target: float | None = None, baseline: str = "random",
                    style: ReportStyle | None = None) -> str:
    style = style or ReportStyle(metric)
    summary = summarize(rows, metric)
    seeds = sorted({int(r["seed"]) for r in rows})
    shown = "%, " if style.scale == 100.0 else ""
    lines = ["# Active-learning report", "",
             f"{metric} on the test split ({shown}mean ± std over {len(seeds)} seed(s): {', '.join(map(str, seeds))}), "
             "by number of labeled items:", "", markdown_table(summary, metric, style.scale), ""]
    if rows:
        lines.append(efficiency_markdown(rows, metric, target, baseline, style.scale, style.unit))
        extra = style.sections(rows, metric, baseline)
        if extra:
            lines.append(extra)
    return "\n".join(lines)


def report_from_csv(out: Path, metric: str | None = None, plots: bool = True, target: float | None = None,
                    baseline: str = "random") -> str:
    """Regenerate report.md (and curves.png) from ``out/metrics.csv``; returns the markdown."""
    out = Path(out)
    style = ReportStyle.of(out)
    metric = metric or style.metric
    rows = read_metrics_csv(out / "metrics.csv")
    text = report_markdown(rows, metric, target, baseline, style)
    atomic_write_text(out / "report.md", text)
    if plots and rows:
        plot_curves(summarize(rows, metric), metric, out / "curves.png", xlabel=style.unit, scale=style.scale)
    return text


def write_reports(out: Path, metric: str | None = None, plots: bool = True) -> str:
    """metrics.csv from the states, then report.md and curves.png from metrics.csv."""
    out = Path(out)
    write_metrics_csv(collect_rows(out), out / "metrics.csv")
    return report_from_csv(out, metric, plots=plots)
