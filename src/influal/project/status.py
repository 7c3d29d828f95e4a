"""``influal status``: what a project holds, what it cost, how the model did per round, what the last query chose."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..report import plot_curves


def project_status(project, *, plot: bool = True) -> dict[str, Any]:
    labels = project.labels
    schema = project.schema
    train, val = labels.ids("train"), labels.ids("val")
    per_class: dict[str, dict[str, int]] = {c: {"train": 0, "val": 0} for c in project.classes}
    cost = {"train": 0.0, "val": 0.0}
    for entry in labels.labels.values():
        for name, n in schema.class_counts(entry["answer"]).items():
            per_class.setdefault(name, {"train": 0, "val": 0})[entry["split"]] += n
        cost[entry["split"]] += schema.cost(entry["answer"])
    pending = Counter(p["split"] for p in labels.pending.values())
    rounds = []
    for record in project.store.complete_rounds():
        rounds.append({"round": record["round"], "strategy": record["strategy"], "budget": record["budget"],
                       "train_labels": record["train_labels"], "val_labels": record["val_labels"],
                       "cost": record["cost"], "metrics": record["metrics"], "scores": record.get("scores"),
                       "timings": record.get("timings", {})})
    metric = project.plugin.metric
    unit = project.plugin.cost_unit
    curve = [r for r in rounds if metric in r["metrics"]]
    plotted = None
    if plot and curve:
        path = project.path / "curves.png"
        points = [{"cost": r["cost"], "mean": r["metrics"][metric], "std": 0.0} for r in curve]
        plot_curves({"model trained at each query": points}, metric, path, xlabel=f"training {unit}",
                    scale=project.plugin.metric_scale)
        plotted = str(path)
    unlabeled = len(project.records) - len(labels.labels) - len(labels.pending)
    out = {"project": str(project.path), "task": project.task, "images": len(project.records),
           "rejected": len(project.rejected), "labeled": {"train": len(train), "val": len(val)},
           "pending": {"train": pending.get("train", 0), "val": pending.get("val", 0)}, "unlabeled": unlabeled,
           "per_class": per_class, "cost": cost, "cost_unit": unit, "metric": metric, "rounds": rounds,
           "curves": plotted, "last_query": rounds[-1] if rounds else None}
    out["lines"] = _lines(out, project.plugin.metric_scale)
    return out


def _lines(s: dict[str, Any], scale: float) -> list[str]:
    unit = s["cost_unit"]
    lines = [f"{s['project']}: {s['task']}, {s['images']} images"
             + (f" ({s['rejected']} left out: not decodable)" if s["rejected"] else ""),
             f"labeled {s['labeled']['train']} for training, {s['labeled']['val']} for reference (validation); "
             f"pending {s['pending']['train'] + s['pending']['val']} (asked for, not imported yet); "
             f"unlabeled {s['unlabeled']}",
             f"cost so far: {s['cost']['train'] + s['cost']['val']:g} {unit} ({s['cost']['train']:g} training, "
             f"{s['cost']['val']:g} reference)"]
    width = max([len(c) for c in s["per_class"]] + [5])
    lines.append(f"{'class':<{width}}  train    val")
    for name, counts in s["per_class"].items():
        lines.append(f"{name:<{width}}  {counts['train']:>5}  {counts['val']:>5}")
    if s["rounds"]:
        lines.append(f"round  strategy    {unit:>8}  {s['metric']} on the reference set")
        for r in s["rounds"]:
            value = r["metrics"].get(s["metric"])
            shown = f"{value * scale:.2f}" if value is not None else "-  (no trained model or no reference set)"
            lines.append(f"{r['round']:>5}  {r['strategy']:<10}  {r['cost']:>8g}  {shown}")
        last = s["last_query"]
        sc = last.get("scores")
        lines.append(f"last query: round {last['round']}, {last['strategy']}, {last['budget']} images"
                     + (f"; scores min {sc['min']:.4g}, mean {sc['mean']:.4g}, max {sc['max']:.4g} over the "
                        "candidates" + (f", the batch's highest {sc['batch_max']:.4g}" if sc["batch_max"] is not None
                                        else "") if sc else "; no scores"))
    else:
        lines.append("no query yet: `influal query PROJECT --strategy random --budget N` to start")
    if s["curves"]:
        lines.append(f"curves: {s['curves']}")
    return lines
