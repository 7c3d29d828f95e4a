"""The ``influal`` command. User mistakes become one line on stderr and exit status 2.

Task-blind: the flags of the training recipe, of ISAL and of every registered task's settings block are
generated from their settings classes (:func:`influal.settings.add_arguments`); tasks, data sets, models and
strategies are looked up in their registries.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from pathlib import Path

from .core.errors import ConfigError, DataWarning, InflualError, SolverWarning
from .core.runtime import tune_allocator
from .settings import INFLUENCE_PRESETS, InfluenceConfig, TrainConfig, add_arguments, given_arguments

EXIT_USAGE = 2
TRAIN_DEST = "train__"
INFLUENCE_DEST = "influence__"
TASK_DEST = "task__"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _option(text: str) -> tuple[str, str, object]:
    """``NAME.KEY=VALUE`` -> (strategy, setting, value); the value is read as JSON where it parses, else text."""
    head, sep, raw = text.partition("=")
    name, dot, key = head.partition(".")
    if not sep or not dot or not name or not key:
        raise argparse.ArgumentTypeError(f"expected STRATEGY.SETTING=VALUE (e.g. bald.samples=10), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), key.strip(), value


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage is one `influal run --help` away)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USAGE, f"influal: error: {message} (see `{self.prog} --help`)\n")


def _task_plugins():
    from .tasks import TASKS

    return list(TASKS.items())


def _add_run_args(p: argparse.ArgumentParser) -> None:
    # Defaults of None mean "the preset's value, else the task's default" (classification: mnist5k, cnn, the demo
    # recipe; detection: digit-canvas, fcos, the detection recipe); explicit flags override presets.
    plugins = _task_plugins()
    p.add_argument("--preset", default=None, help="fill the settings from a named preset: cifar10, cifar100, svhn, "
                   "cifar10-large (need --data-root), mnist5k-bench (offline); explicit flags override it")
    p.add_argument("--task", default=None, help=f"one of {', '.join(name for name, _ in plugins)} (default "
                   "classification)")
    p.add_argument("--dataset", default=None, help="; ".join(f"{name}: {', '.join(pl.datasets().names())}"
                                                             for name, pl in plugins))
    p.add_argument("--data-root", default=None, help="local folder (or file) with the dataset; nothing is downloaded")
    p.add_argument("--model", default=None, help="; ".join(f"{name}: {', '.join(pl.models().names())}"
                                                           for name, pl in plugins))
    p.add_argument("--strategies", default=None, type=_csv, help="comma-separated strategy names")
    p.add_argument("--strategy-option", action="append", default=[], type=_option, metavar="NAME.KEY=VALUE",
                   help="a strategy's own setting, e.g. bald.samples=10 or isal.solver=exact (repeatable)")
    p.add_argument("--initial", type=int, default=None, help="size of the random initial labeled set")
    p.add_argument("--budget", type=int, default=None, help="items labeled per round")
    p.add_argument("--rounds", type=int, default=None, help="trained-and-evaluated models, the initial one included")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (repetitions)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=None, help="reference (validation) split size")
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--stop-at", type=float, default=None, help="end a run at the first round whose test metric "
                   "reaches this (a fraction, or in percent)")
    p.add_argument("--out", required=True, help="results folder (resumed if it holds the same experiment)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g = p.add_argument_group("training (a preset, then overrides)")
    g.add_argument("--train-preset", default=None, help="demo (classification's default), paper, fast; detection "
                   "(detection's default), detection-paper")
    add_arguments(g, TrainConfig, TRAIN_DEST)
    g = p.add_argument_group("influence (ISAL and its variants)")
    g.add_argument("--influence-preset", default=None, help=", ".join(INFLUENCE_PRESETS))
    add_arguments(g, InfluenceConfig, INFLUENCE_DEST)
    seen: set[str] = set()  # tasks may share a setting's name: its flag is added once and serves both
    for name, plugin in plugins:
        g = p.add_argument_group(f"{name} (--task {name})")
        add_arguments(g, plugin.settings_class, TASK_DEST, skip=tuple(seen))
        seen.update(f.name for f in _fields(plugin.settings_class))
    g = p.add_argument_group("deprecated")
    g.add_argument("--detector", default=None, help="use --model (with --task detection)")
    g.add_argument("--target-ap", type=float, default=None, help="use --stop-at")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-round lines")


def _fields(cls):
    from .settings import cli_fields

    return cli_fields(cls)


def _percent(value: float | None) -> float | None:
    return None if value is None else (value / 100.0 if value > 1.0 else value)


def build_config(args: argparse.Namespace):
    from .loop.config import ExperimentConfig, isal_family
    from .loop.presets import get_preset
    from .tasks import TASKS, get_task

    preset = get_preset(args.preset) if args.preset else None
    base = dict(preset.settings) if preset else {}
    warn = (lambda m: print(f"influal: {m}", file=sys.stderr)) if not getattr(args, "quiet", False) else (lambda m: None)
    if args.detector is not None:
        warn("--detector is deprecated; use --model (with --task detection)")
        if args.model is not None and args.model != args.detector:
            raise ConfigError("--detector and --model disagree; give --model only")
        args.model = args.detector
        args.task = args.task or "detection"
    if args.target_ap is not None:
        warn("--target-ap is deprecated; use --stop-at")
        args.stop_at = args.stop_at if args.stop_at is not None else args.target_ap
    task_name = args.task or base.get("task", "classification")
    plugin = get_task(task_name)

    # training: a preset (the task's default), then the flags
    train = TrainConfig.preset(args.train_preset) if args.train_preset else base.get(
        "train", TrainConfig.preset(plugin.default_train_preset))
    overrides = given_arguments(args, TrainConfig, TRAIN_DEST)
    if "epochs" in overrides:
        overrides["milestones"] = tuple(m for m in train.milestones if m <= overrides["epochs"])
    train = train.replace(**overrides) if overrides else train

    # strategies and their own settings
    strategies = args.strategies or base.get("strategies", ExperimentConfig.__dataclass_fields__["strategies"].default)
    strategy_settings: dict[str, dict] = {}
    influence = given_arguments(args, InfluenceConfig, INFLUENCE_DEST)
    if args.influence_preset is not None:
        if args.influence_preset not in INFLUENCE_PRESETS:
            raise ConfigError(f"unknown influence preset {args.influence_preset!r}; choose "
                              f"{', '.join(INFLUENCE_PRESETS)}")
        influence = {**INFLUENCE_PRESETS[args.influence_preset].to_dict(), **influence}
    if influence:
        targets = [s for s in strategies if isal_family(s)]
        if not targets:
            flags = ", ".join("--" + k.replace("_", "-") for k in influence)
            raise ConfigError(f"{flags} set ISAL's settings, but no ISAL strategy is among --strategies")
        for name in targets:
            strategy_settings[name] = dict(influence)
    for name, key, value in args.strategy_option:
        if name not in strategies:
            raise ConfigError(f"--strategy-option {name}.{key}: {name!r} is not among --strategies")
        strategy_settings.setdefault(name, {})[key] = value

    # the task's settings block: flags of other tasks are refused
    task_flags = {}
    for other, other_plugin in TASKS.items():
        given = given_arguments(args, other_plugin.settings_class, TASK_DEST)
        if other != task_name:
            foreign = sorted(set(given) - {f.name for f in _fields(plugin.settings_class)})
            if foreign:
                flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
                raise ConfigError(f"{flags} only apply to --task {other}")
        else:
            task_flags = given
    task_settings = base.get("task_settings")
    if task_settings is None or isinstance(task_settings, dict):
        task_settings = plugin.settings_class.from_dict(task_settings or {})
    if task_flags:
        task_settings = task_settings.replace(**task_flags)

    fields = ("dataset", "model", "initial", "budget", "rounds", "seeds", "data_root", "val_size", "test_size")
    settings = {**base, **{k: getattr(args, k) for k in fields if getattr(args, k) is not None}}
    if args.task is not None and args.task != base.get("task", args.task):
        for key in ("dataset", "model"):  # a preset of another task: its data set and model do not carry over
            if getattr(args, key) is None:
                settings.pop(key, None)
    settings.update(task=task_name, strategies=tuple(strategies), first_seed=args.first_seed, device=args.device,
                    train=train, task_settings=task_settings)
    if args.stop_at is not None:
        settings["stop_at"] = _percent(args.stop_at)
    settings.pop("strategy_settings", None)  # a preset's own are merged with the flags' by preset.config
    if preset is not None:
        return preset.config(**settings, strategy_settings=strategy_settings)
    return ExperimentConfig(**{**settings, "strategy_settings": strategy_settings})


def cmd_run(args: argparse.Namespace) -> int:
    from .app.run import run_prepared
    from .loop.experiment import Experiment

    config = build_config(args)
    experiment = Experiment.prepare(config, args.out)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    run_prepared(experiment, progress=not args.quiet, log=log)
    print((Path(args.out) / "report.md").read_text())
    print(f"results in {args.out}: config.json, metrics.csv, report.md, curves.png, runs/")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import parse_target, report_from_csv

    print(report_from_csv(Path(args.results), args.metric, target=parse_target(args.target), baseline=args.baseline))
    return 0


def cmd_check_influence(args: argparse.Namespace) -> int:
    from .app.selfcheck import run_check

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
    from .bench import BENCHMARKS

    result = BENCHMARKS[args.name]()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result.get("rows", []):
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="influal", description="Active learning with influence selection (ISAL).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run (or resume) an active-learning experiment")
    _add_run_args(run)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="regenerate report.md and curves.png from RESULTS/metrics.csv")
    rep.add_argument("results")
    rep.add_argument("--metric", default=None, help="metric column (default: the task's: accuracy, AP)")
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


class Stopped(BaseException):
    """SIGTERM: stop like Ctrl-C, at whatever point the run is (state files are only ever replaced whole)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """influal's own warnings (data, solvers) as one line each; others as Python shows them."""
    if issubclass(category, (DataWarning, SolverWarning)):
        print(f"influal: warning: {message}", file=sys.stderr, flush=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _on_signal(signum, _frame):
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # an application may: keep freed batch buffers for reuse (influal/core/runtime.py)
    previous = None
    show = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        previous = signal.signal(signal.SIGTERM, _on_signal)
    except ValueError:  # not the main thread: leave the host's handling alone
        pass
    try:
        parser = make_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0) or a usage error, already printed in one line (2)
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        return args.func(args)
    except InflualError as exc:
        print(f"influal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("influal: interrupted; run the same command again to resume from the last complete round",
              file=sys.stderr)
        return 130
    except Stopped as stop:
        print(f"influal: stopped by {signal.Signals(stop.signum).name}; run the same command again to resume from "
              "the last complete round", file=sys.stderr)
        return 128 + stop.signum
    except MemoryError:
        print("influal: error: out of memory; lower --batch-size or the pool size", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a folder that vanished: one line, not a traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"influal: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        warnings.showwarning = show
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
