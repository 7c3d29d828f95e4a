"""The ``influal`` command. User mistakes become one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InflualError
from .runtime import tune_allocator

EXIT_USAGE = 2


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_run_args(p: argparse.ArgumentParser) -> None:
    # Defaults of None mean "the preset's value, else ExperimentConfig's default" (mnist5k, cnn, isal,random,
    # 100 initial, 100 per round, 5 rounds, 3 seeds, the demo training recipe): explicit flags override presets.
    p.add_argument("--preset", default=None, help="fill the settings from a named preset: cifar10, cifar100, svhn, "
                   "cifar10-large (need --data-root), mnist5k-bench (offline); explicit flags override it")
    p.add_argument("--dataset", default=None, help="mnist5k (offline), cifar10, cifar100, svhn; detection: "
                   "digit-canvas (offline), coco, voc")
    p.add_argument("--data-root", default=None, help="local folder with the dataset in torchvision's format")
    p.add_argument("--model", default=None, help="cnn, resnet18, resnet18-maxpool, linear")
    p.add_argument("--strategies", default=None, type=_csv, help="comma-separated strategy names")
    p.add_argument("--initial", type=int, default=None, help="size of the random initial labeled set")
    p.add_argument("--budget", type=int, default=None, help="items labeled per round")
    p.add_argument("--rounds", type=int, default=None, help="trained-and-evaluated models, the initial one included")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (repetitions)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=None, help="reference (validation) split size")
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--out", required=True, help="results folder (resumed if it holds the same experiment)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g = p.add_argument_group("training (a preset, then overrides)")
    g.add_argument("--train-preset", default=None, help="demo (default), paper, fast; detection (default for "
                   "--task detection), detection-paper")
    g.add_argument("--epochs", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--augment", help="none, crop, flip_crop")
    g = p.add_argument_group("influence (ISAL)")
    g.add_argument("--influence-preset", default=None, help="paper")
    g.add_argument("--scope", help="last, weights, all")
    g.add_argument("--solver", help="lissa, lissa-auto, cg, exact, identity")
    g.add_argument("--damping", type=float)
    g.add_argument("--scale", type=float)
    g.add_argument("--lissa-depth", type=int)
    g.add_argument("--lissa-repeats", type=int)
    g.add_argument("--hvp-batch-size", type=int)
    g.add_argument("--reference-size", type=int)
    g.add_argument("--memory-format", help="auto (channels-last convolutions on the CPU), channels_last, preserve")
    g = p.add_argument_group("object detection (--task detection)")
    g.add_argument("--task", default=None, choices=("classification", "detection"),
                   help="classification (default) or detection (default dataset digit-canvas, offline)")
    g.add_argument("--detector", help="fcos (default), fasterrcnn")
    g.add_argument("--backbone", help="tiny (default, trains on CPU), resnet50-fpn")
    g.add_argument("--weights", help="local .pth for the detector or its ResNet-50 backbone (never downloaded)")
    g.add_argument("--score-threshold", type=float, help="pseudo-box score threshold (default 0.1, the paper's)")
    g.add_argument("--image-size", type=int, help="digit-canvas image size in pixels (default 128)")
    g.add_argument("--min-size", type=int, help="detector resize min_size (default: the image size)")
    g.add_argument("--max-size", type=int, help="detector resize max_size (default: min_size)")
    g.add_argument("--pool-size", type=int, help="digit-canvas pool images (default 1000)")
    g.add_argument("--max-digits", type=int, help="digits per canvas, at most (default 4)")
    g.add_argument("--target-ap", type=float, help="end a run at the first round whose test AP reaches this "
                   "(a fraction, or in percent)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-round lines")


DETECTION_FLAGS = ("detector", "backbone", "weights", "score_threshold", "image_size", "min_size", "max_size",
                   "pool_size", "max_digits", "target_ap")


def _apply_detection(args: argparse.Namespace, settings: dict) -> None:
    """``--task`` and the detection flags: a detection run defaults to the offline digit-canvas data set."""
    from .config import DetectionConfig
    from .errors import ConfigError

    given = {k: getattr(args, k) for k in DETECTION_FLAGS if getattr(args, k, None) is not None}
    task = args.task or settings.get("task", "classification")
    if task != "detection":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"{flags} only apply to object detection; add --task detection")
        return
    if given.get("target_ap") is not None and given["target_ap"] > 1.0:
        given["target_ap"] = given["target_ap"] / 100.0
    settings["task"] = "detection"
    settings.setdefault("dataset", "digit-canvas")
    current = settings.get("detection", DetectionConfig())
    settings["detection"] = current.replace(**given) if given else current


def build_config(args: argparse.Namespace):
    from .config import INFLUENCE_PRESETS, ExperimentConfig, InfluenceConfig, TrainConfig
    from .errors import ConfigError
    from .presets import get_preset

    preset = get_preset(args.preset) if args.preset else None
    base = dict(preset.settings) if preset else {}
    default_recipe = "detection" if getattr(args, "task", None) == "detection" else "demo"
    train = TrainConfig.preset(args.train_preset) if args.train_preset else base.get("train",
                                                                                     TrainConfig.preset(default_recipe))
    overrides = {k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "augment") if getattr(args, k) is not None}
    if "epochs" in overrides:
        overrides["milestones"] = tuple(m for m in train.milestones if m <= overrides["epochs"])
    train = train.replace(**overrides) if overrides else train
    if args.influence_preset is None:
        influence = base.get("influence", InfluenceConfig())
    elif args.influence_preset in INFLUENCE_PRESETS:
        influence = INFLUENCE_PRESETS[args.influence_preset]
    else:
        raise ConfigError(f"unknown influence preset {args.influence_preset!r}; choose {', '.join(INFLUENCE_PRESETS)}")
    names = ("scope", "solver", "damping", "scale", "lissa_depth", "lissa_repeats", "hvp_batch_size", "reference_size",
             "memory_format")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    influence = influence.replace(**overrides) if overrides else influence
    fields = ("dataset", "model", "strategies", "initial", "budget", "rounds", "seeds", "data_root", "val_size",
              "test_size")
    settings = {**base, **{k: getattr(args, k) for k in fields if getattr(args, k) is not None}}
    settings.update(first_seed=args.first_seed, device=args.device, train=train, influence=influence)
    _apply_detection(args, settings)
    if preset is not None:
        return preset.config(**settings)
    return ExperimentConfig(**settings)


def cmd_run(args: argparse.Namespace) -> int:
    from .loop import Experiment

    config = build_config(args)
    experiment = Experiment.prepare(config, args.out)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    experiment.run(progress=not args.quiet, log=log)
    print((Path(args.out) / "report.md").read_text())
    print(f"results in {args.out}: config.json, metrics.csv, report.md, curves.png, runs/")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_from_csv

    from .report import parse_target

    out = Path(args.results)
    metric = args.metric
    detection = _results_task(out) == "detection"
    if detection and metric == "accuracy":  # the default metric; detection results hold AP
        metric = "AP"
    print(report_from_csv(out, metric, target=parse_target(args.target), baseline=args.baseline))
    if detection:
        from .report import write_box_report

        print(write_box_report(out, metric, args.baseline))
    return 0


def _results_task(out: Path) -> str:
    """The task recorded in a results folder's config.json ("classification" if absent or unreadable)."""
    import json

    try:
        return json.loads((out / "config.json").read_text()).get("task", "classification")
    except (OSError, ValueError):
        return "classification"


def cmd_check_influence(args: argparse.Namespace) -> int:
    import json

    from .selfcheck import run_check

    result = run_check(args.results, args.strategy, args.seed, args.round, args.budget, args.damping, args.solvers)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "lines"}, indent=2))
        return 0
    model, setting = result["model"], result["setting"]
    print(f"model: {model['source']}" + (f", {model.get('strategy')} seed {model['seed']} round {model['round']}"
                                         if "strategy" in model else "")
          + f"; test metric {model['metric']:.4f}"
          + ("" if "reproduced" not in model else f" (reproduced exactly: {'yes' if model['reproduced'] else 'NO'})"))
    print(f"exact solve on the last-layer scope: {setting['params']} parameters, {setting['labeled']} labeled, "
          f"λ = {setting['damping']}, {setting['exact_seconds']:.2f}s; ranking of {setting['pool']} pool items")
    for line in result["lines"]:
        print(line)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from .bench import BENCHMARKS

    result = BENCHMARKS[args.name]()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result.get("rows", []):
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="influal", description="Active learning with influence selection (ISAL).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) an active-learning experiment")
    _add_run_args(run)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="regenerate report.md and curves.png from RESULTS/metrics.csv")
    rep.add_argument("results")
    rep.add_argument("--metric", default="accuracy")
    rep.add_argument("--target", type=float, default=None, help="metric to reach for the labels-saved table, as "
                     "a fraction (0.9) or in percent (90); default: the baseline's final mean")
    rep.add_argument("--baseline", default="random", help="strategy the savings and paired differences refer to")
    rep.set_defaults(func=cmd_report)
    chk = sub.add_parser("check-influence", help="compare every inverse-HVP solver with the exact solve on a "
                         "trained model's last layer (a saved run, or the demo setting)")
    chk.add_argument("results", nargs="?", default=None, help="a results folder (default: the demo setting)")
    chk.add_argument("--strategy", default="isal")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--round", type=int, default=None, help="default: the last finished round")
    chk.add_argument("--budget", type=int, default=None, help="top-B for the overlap (default: the run's budget)")
    chk.add_argument("--damping", type=float, default=0.01, help="λ of the exact reference solve")
    chk.add_argument("--solvers", type=_csv, default=None,
                     help="comma-separated subset of cg, lissa-auto, lissa-paper, identity (default: all)")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=cmd_check_influence)
    bench = sub.add_parser("bench", help="measure the influence engine: scoring speed, scaling, solvers, fidelity")
    bench.add_argument("name", choices=["scoring", "scaling", "solvers", "fidelity", "allocator"])
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # an application may: keep freed batch buffers for reuse (influal/runtime.py)
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InflualError as exc:
        print(f"influal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("influal: interrupted; run the same command again to resume from the last complete round",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
