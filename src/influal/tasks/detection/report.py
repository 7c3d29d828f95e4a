"""Detection's section of report.md: AP @ ground-truth boxes per round (the supplement's Tables 4-7) and the
boxes saved against a baseline at equal AP."""

from __future__ import annotations

import math

from ...core.stats import labels_to_reach, summarize


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
