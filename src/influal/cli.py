"""The ``influal`` command. User mistakes become one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InflualError

EXIT_USAGE = 2


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (offline), cifar10, cifar100, svhn")
    p.add_argument("--data-root", default=None, help="local folder with the dataset in torchvision's format")
    p.add_argument("--model", default="cnn", help="cnn, resnet18, resnet18-maxpool, linear")
    p.add_argument("--strategies", default="isal,random", type=_csv, help="comma-separated strategy names")
    p.add_argument("--initial", type=int, default=100, help="size of the random initial labeled set")
    p.add_argument("--budget", type=int, default=100, help="items labeled per round")
    p.add_argument("--rounds", type=int, default=5, help="trained-and-evaluated models, the initial one included")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (repetitions)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=None, help="reference (validation) split size")
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--out", required=True, help="results folder (resumed if it holds the same experiment)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g = p.add_argument_group("training (a preset, then overrides)")
    g.add_argument("--train-preset", default="demo", help="demo, paper, fast")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-round lines")


def build_config(args: argparse.Namespace):
    from .config import INFLUENCE_PRESETS, ExperimentConfig, InfluenceConfig, TrainConfig
    from .errors import ConfigError

    train = TrainConfig.preset(args.train_preset)
    overrides = {k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "augment") if getattr(args, k) is not None}
    if "epochs" in overrides:
        overrides["milestones"] = tuple(m for m in train.milestones if m <= overrides["epochs"])
    train = train.replace(**overrides) if overrides else train
    if args.influence_preset is None:
        influence = InfluenceConfig()
    elif args.influence_preset in INFLUENCE_PRESETS:
        influence = INFLUENCE_PRESETS[args.influence_preset]
    else:
        raise ConfigError(f"unknown influence preset {args.influence_preset!r}; choose {', '.join(INFLUENCE_PRESETS)}")
    names = ("scope", "solver", "damping", "scale", "lissa_depth", "lissa_repeats", "hvp_batch_size", "reference_size")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    influence = influence.replace(**overrides) if overrides else influence
    return ExperimentConfig(dataset=args.dataset, model=args.model, strategies=args.strategies, initial=args.initial,
                            budget=args.budget, rounds=args.rounds, seeds=args.seeds, first_seed=args.first_seed,
                            data_root=args.data_root, val_size=args.val_size, test_size=args.test_size,
                            device=args.device, train=train, influence=influence)


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

    out = Path(args.results)
    metric = args.metric
    print(report_from_csv(out, metric))
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
    rep.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
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
