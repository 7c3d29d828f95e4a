"""Detection benchmark: ISAL vs random, localization stability and core-set with a tiny FCOS on digit canvases.

    python -m benchmarks.detection                       # the preset below, results/bench/detection
    python -m benchmarks.detection --seeds 1 --rounds 2  # a quick look

The offline preset: 64 px canvases of 1-4 MNIST digits (pool 600, reference/validation 150, test 300), the tiny
FCOS (``--backbone tiny``), 60 random images + 60 per round, 4 rounds (60..240 images), 3 seeds; every round
trains a fresh detector for 12 epochs (SGD 0.01, batch 8). ISAL differentiates the heads' final-layer weights
(the paper's P) and solves with LiSSA (damping 0.01, scale 1000, 2 chains of 100 steps, 4-image HVPs).
Pseudo-boxes: detections with score >= 0.1.

Runs (or resumes) the experiment with :func:`influal.loop.run_experiment`, writes ``detection.json`` beside the
usual results, and rewrites the measured block of the "## Detection (issue 5)" section of docs/benchmarks.md
(between two HTML comment markers; the text around them is kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import invocation, run_timed
from benchmarks.common import update_docs as _update_docs
from influal.cli import _option as parse_option
from influal.core.io import atomic_write_json
from influal.core.stats import summarize
from influal.loop.config import ExperimentConfig, isal_family
from influal.report import read_metrics_csv
from influal.settings import InfluenceConfig, TrainConfig
from influal.tasks.detection.report import box_table_markdown, boxes_saved, boxes_saved_markdown, boxes_to_reach
from influal.tasks.detection.settings import DetectionSettings

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Detection (issue 5)"
BEGIN, END = "<!-- detection:begin -->", "<!-- detection:end -->"
STRATEGIES = ("isal", "random", "localization_stability", "det_coreset")


def preset(data_root: str | None, strategies=STRATEGIES, model: str = "fcos") -> ExperimentConfig:
    isal = InfluenceConfig(scope="weights", solver="lissa", damping=0.01, scale=1000.0, lissa_depth=100,
                           lissa_repeats=2, hvp_batch_size=4, batch_size=16)
    return ExperimentConfig(
        task="detection", dataset="digit-canvas", model=model, data_root=data_root, strategies=tuple(strategies),
        initial=60, budget=60, rounds=4, seeds=3, val_size=150, test_size=300, device="cpu",
        train=TrainConfig(epochs=12, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=8, milestones=(9,),
                          augment="none", warmup_iters=20, grad_clip=10.0),
        strategy_settings={name: isal.to_dict() for name in strategies if isal_family(name)},
        task_settings=DetectionSettings(backbone="tiny", image_size=64, pool_size=600, score_threshold=0.1,
                                        batch_size=16))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "detection"))
    p.add_argument("--data-root", default=None, help="digit-canvas folder (default: under $INFLUAL_DATA)")
    p.add_argument("--strategies", default=None, help=f"comma-separated; default {','.join(STRATEGIES)}")
    p.add_argument("--model", default="fcos", help="detector family (fcos, faster_rcnn), tiny backbone")
    p.add_argument("--strategy-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="a strategy's own setting (value as JSON, else a string), as influal run's flag")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--score-threshold", type=float, default=None,
                   help="pseudo-box score threshold (default: the preset's 0.1, the paper's)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: on a shared 2-core "
                   "machine small convolutions ran ~50x slower on two oversubscribed threads than on one)")
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of resuming it")
    p.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    return p.parse_args(argv)


def build_config(args) -> ExperimentConfig:
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip()) if args.strategies else STRATEGIES
    config = preset(args.data_root, strategies, args.model)
    changes = {}
    if args.strategy_option:
        settings = {k: dict(v) for k, v in config.strategy_settings.items()}
        for option in args.strategy_option:
            name, key, value = parse_option(option)
            settings.setdefault(name, {})[key] = value
        changes["strategy_settings"] = settings
    for name in ("seeds", "rounds"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.score_threshold is not None:
        changes["task_settings"] = replace(config.task_settings, score_threshold=args.score_threshold)
    return config.replace(**changes) if changes else config


def per_strategy_seconds(out: Path) -> dict[str, dict[str, float]]:
    """Mean per seed of the summed train / eval / select seconds of each strategy."""
    sums: dict[str, dict[str, list[float]]] = {}
    for path in sorted(out.glob("runs/*/seed*/state.json")):
        data = json.loads(path.read_text())
        per = sums.setdefault(data["strategy"], {"train_s": [], "eval_s": [], "select_s": []})
        for key in per:
            per[key].append(sum(r["timings"].get(key, 0.0) for r in data["rounds"]))
    return {s: {k: sum(v) / max(len(v), 1) for k, v in per.items()} for s, per in sums.items()}


def boxes_per_selected_image(out: Path) -> dict[str, float]:
    """Mean ground-truth boxes per image each strategy added (the paper: ISAL prefers images with few objects)."""
    added: dict[str, list[float]] = {}
    for path in sorted(out.glob("runs/*/seed*/state.json")):
        data = json.loads(path.read_text())
        rounds = data["rounds"]
        for a, b in zip(rounds, rounds[1:]):
            if b["labeled"] > a["labeled"]:
                added.setdefault(data["strategy"], []).append((b["cost"] - a["cost"]) / (b["labeled"] - a["labeled"]))
    return {s: sum(v) / len(v) for s, v in added.items()}


def analyse(out: Path) -> dict:
    rows = read_metrics_csv(out / "metrics.csv")
    summary = summarize(rows, "AP")
    result = {"summary": summary, "boxes_saved": boxes_saved(summary, "random"),
              "seconds": per_strategy_seconds(out), "boxes_per_added_image": boxes_per_selected_image(out)}
    if "random" in summary:
        target = summary["random"][-1]["mean"]
        need = {s: boxes_to_reach([(p["cost"], p["mean"]) for p in pts], target) for s, pts in summary.items()}
        base = need.get("random")
        result["at_random_final_ap"] = {
            "target": target,
            "boxes": need,
            "saved_pct": {s: (None if n is None or not base else 100.0 * (base - n) / base) for s, n in need.items()}}
    return result


def markdown_block(config: ExperimentConfig, result: dict, out: Path, command: str, wall: float, threads: int) -> str:
    rows = read_metrics_csv(out / "metrics.csv")
    summary = summarize(rows, "AP")
    det, tr = config.task_settings, config.train
    family = [s for s in config.strategies if isal_family(s)]  # ISAL's settings, as given to its whole family
    settings = config.strategy_settings.get(family[0], {}) if family else preset(None).strategy_settings["isal"]
    inf = InfluenceConfig.from_dict({k: v for k, v in settings.items() if k in InfluenceConfig().to_dict()})
    lines = [BEGIN, "",
             f"Command: `{command}`  ",
             f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs), no GPU; "
             f"torch {torch.__version__}, {threads} intra-op thread(s); Python {platform.python_version()}  ",
             f"Date: {dt.date.today().isoformat()}; wall time of this invocation {wall / 60:.1f} min "
             "(a resumed run only counts what it computed)  ",
             f"Setting: digit-canvas {det.image_size} px, 1-{det.max_digits} digits (pool {det.pool_size}, "
             f"reference/validation {config.val_size}, test {config.test_size}); {config.model} with the {det.backbone} "
             f"backbone; {config.initial} random images + {config.budget} per round, {config.rounds} rounds, seeds "
             f"{', '.join(map(str, config.seed_list))}; training {tr.epochs} epochs SGD lr {tr.lr}, batch "
             f"{tr.batch_size}, x{tr.gamma} at {list(tr.milestones)}; pseudo-boxes score >= {det.score_threshold}; "
             f"ISAL: scope {inf.scope} (the heads' final-layer weights), {inf.solver} damping {inf.damping}, scale "
             f"{inf.scale}, {inf.lissa_repeats}x{inf.lissa_depth} steps, HVP batch {inf.hvp_batch_size}", "",
             "### AP @ ground-truth boxes", "",
             "Test COCO AP (0..1, mean ± std over seeds), ground-truth boxes in the labeled set and 10k × AP / boxes, "
             "per round (the layout of the supplement's Tables 4-7):", "", box_table_markdown(summary, "AP"), ""]
    saved = boxes_saved_markdown(summary, "AP", "random")
    if saved:
        lines += ["### Boxes saved against random at equal AP", "",
                  "Per round: the boxes random's mean curve needs for the same AP (linear interpolation between its "
                  "rounds) minus the boxes used (positive = fewer boxes than random).", "", saved, ""]
    final = result.get("at_random_final_ap")
    if final:
        lines += [f"### Boxes to reach random's final AP ({final['target']:.3f})", "",
                  "| strategy | boxes | saved vs random |", "|---|---|---|"]
        for s, n in final["boxes"].items():
            pct = final["saved_pct"][s]
            lines.append(f"| {s} | {'not reached' if n is None else f'{n:.0f}'} | "
                         f"{'—' if pct is None else f'{pct:+.1f}%'} |")
        lines.append("")
    per_image = result["boxes_per_added_image"]
    lines += ["### Compute and what was selected", "",
              "Per seed, summed over rounds: training, evaluation and selection seconds; and the mean ground-truth "
              "boxes per image a strategy added.", "",
              "| strategy | train (s) | evaluate (s) | select (s) | boxes per added image |", "|---|---|---|---|---|"]
    for s, sec in result["seconds"].items():
        per = per_image.get(s)
        lines.append(f"| {s} | {sec['train_s']:.0f} | {sec['eval_s']:.0f} | {sec['select_s']:.0f} | "
                     f"{'—' if per is None else f'{per:.2f}'} |")
    lines += ["", END]
    return "\n".join(lines)


def update_docs(path: Path, block: str) -> None:
    _update_docs(path, block, SECTION, BEGIN, END)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    out = Path(args.out)
    wall = run_timed(config, out, fresh=args.fresh, threads=args.threads)
    result = analyse(out)
    result.update(wall_s=wall, config=config.to_dict())
    atomic_write_json(out / "detection.json", result)
    command = invocation("benchmarks.detection", argv)
    if argv == []:
        command = "make bench  (= python -m benchmarks.run_all; this part: python -m benchmarks.detection)"
    block = markdown_block(config, result, out, command, wall, torch.get_num_threads())
    print(block)
    if not args.no_docs:
        update_docs(Path(args.docs), block)
        print(f"updated {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
