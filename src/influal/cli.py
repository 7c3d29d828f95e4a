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
# task settings that describe where an experiment's data comes from: a project has its own images (and --weights)
PROJECT_SKIPS = ("weights", "images", "annotations", "test_images", "test_annotations", "val_images",
                 "val_annotations", "pool_size", "image_size", "min_digits", "max_digits")


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
    _add_task_flags(p, plugins)
    g = p.add_argument_group("deprecated")
    g.add_argument("--detector", default=None, help="use --model (with --task detection)")
    g.add_argument("--target-ap", type=float, default=None, help="use --stop-at")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-round lines")


def _add_task_flags(p: argparse.ArgumentParser, plugins, how: str = "--task {name}", skip: tuple[str, ...] = ()
                    ) -> None:
    seen: set[str] = set(skip)  # tasks may share a setting's name: its flag is added once and serves both
    for name, plugin in plugins:
        g = p.add_argument_group(f"{name} ({how.format(name=name)})")
        add_arguments(g, plugin.settings_class, TASK_DEST, skip=tuple(seen))
        seen.update(f.name for f in _fields(plugin.settings_class))


def _fields(cls):
    from .settings import cli_fields

    return cli_fields(cls)


def _percent(value: float | None) -> float | None:
    return None if value is None else (value / 100.0 if value > 1.0 else value)


def build_config(args: argparse.Namespace):
    from .loop.config import ExperimentConfig, isal_family
    from .loop.presets import get_preset
    from .tasks import get_task

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
    task_name = args.task or base.get("task") or _task_of_dataset(args.dataset) or "classification"
    plugin = get_task(task_name)

    train = _train_config(args, base.get("train", TrainConfig.preset(plugin.default_train_preset)))
    strategies = args.strategies or base.get("strategies", ExperimentConfig.__dataclass_fields__["strategies"].default)
    strategy_settings = _strategy_settings(args, strategies, isal_family)
    task_settings = _task_settings(args, task_name, base.get("task_settings"))

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


def _task_of_dataset(dataset: str | None) -> str | None:
    """The task whose data-set formats alone hold ``dataset`` (``--dataset coco`` means detection), else None."""
    if dataset is None:
        return None
    owners = [name for name, plugin in _task_plugins() if dataset in plugin.datasets().names()]
    return owners[0] if len(owners) == 1 else None


def _train_config(args: argparse.Namespace, default: TrainConfig) -> TrainConfig:
    """The training recipe: ``--train-preset`` (else ``default``), then the training flags."""
    train = TrainConfig.preset(args.train_preset) if args.train_preset else default
    overrides = given_arguments(args, TrainConfig, TRAIN_DEST)
    if "epochs" in overrides:
        overrides["milestones"] = tuple(m for m in train.milestones if m <= overrides["epochs"])
    return train.replace(**overrides) if overrides else train


def _strategy_settings(args: argparse.Namespace, strategies, isal_family) -> dict[str, dict]:
    """Each strategy's own settings from the ISAL flags, ``--influence-preset`` and ``--strategy-option``."""
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
    return strategy_settings


def _task_settings(args: argparse.Namespace, task_name: str, base=None):
    """The task's settings block (``base``, then the task's flags); flags of other tasks are refused."""
    from .tasks import TASKS, get_task

    plugin = get_task(task_name)
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
    task_settings = base
    if task_settings is None or isinstance(task_settings, dict):
        task_settings = plugin.settings_class.from_dict(task_settings or {})
    if task_flags:
        task_settings = task_settings.replace(**task_flags)
    return task_settings


def cmd_run(args: argparse.Namespace) -> int:
    from .app.run import run_prepared
    from .loop.experiment import Experiment

    config = build_config(args)
    experiment = Experiment.prepare(config, args.out)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    run_prepared(experiment, progress=not args.quiet, log=log)
    from .core import dist

    if dist.is_main():
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


# ---------------------------------------------------------------------------------------------- labeling projects
def _log(args: argparse.Namespace):
    return (lambda _m: None) if getattr(args, "quiet", False) else (lambda m: print(m, file=sys.stderr, flush=True))


def _read_classes(args: argparse.Namespace):
    if args.classes is not None and args.classes_file is not None:
        raise ConfigError("give --classes or --classes-file, not both")
    if args.classes_file is not None:
        path = Path(args.classes_file)
        if not path.is_file():
            raise ConfigError(f"--classes-file {path} does not exist")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(args.classes) if args.classes is not None else None


def cmd_init(args: argparse.Namespace) -> int:
    from .project import Project

    project = Project.init(args.project, task=args.task, images=args.images, classes=_read_classes(args),
                           labels=args.labels, val=args.val, seed=args.seed, image_url=args.image_url,
                           document_root=args.document_root, allow_empty=args.allow_empty,
                           progress=not args.quiet, log=lambda m: print(m))
    print(f"next: influal query {project.path} --strategy "
          + ("isal" if project.labels.ids("train") and project.labels.ids("val") else "random") + " --budget N")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from .project import Project

    Project(args.project).add(args.folder, progress=not args.quiet, log=lambda m: print(m))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from .loop.config import isal_family
    from .project import Project

    project = Project(args.project)
    train = None if args.no_train else _train_config(args, TrainConfig.preset(project.plugin.default_train_preset))
    if args.no_train and args.train_preset:
        raise ConfigError("--no-train uses the model as it is; drop --train-preset")
    if args.no_train and given_arguments(args, TrainConfig, TRAIN_DEST):
        raise ConfigError("--no-train uses the model as it is; drop the training flags")
    settings = _strategy_settings(args, (args.strategy,), isal_family).get(args.strategy, {})
    record = project.query(args.strategy, args.budget, strategy_settings=settings, val_share=args.val_share,
                           model=args.model, weights=args.weights, train=train, no_train=args.no_train,
                           task_settings=_task_settings(args, project.task), device=args.device,
                           progress=not args.quiet, log=_log(args))
    from .core import dist

    if not dist.is_main():
        return 0
    folder = project.store.query_dir(record["round"])
    metric = record["metrics"].get(project.plugin.metric)
    print(f"query round {record['round']}: {len(record['selected'])} image(s) chosen by {record['strategy']}"
          + (f", {len(record['val_reserved'])} drawn at random for the reference set" if record["val_reserved"] else "")
          + (f"; the model's {project.plugin.metric} on the reference set: {metric * project.plugin.metric_scale:.2f}"
             if metric is not None else "")
          + ("" if record["trained"] else "; no labels yet, so no trained model (a cold start)"))
    print(f"batch in {folder}: {', '.join(record['files'])}")
    print(f"next: label them (Label Studio: import {folder / 'tasks.json'} into a project with the labeling config "
          f"{folder / 'labeling-config.xml'}), then `influal import {project.path} EXPORT`")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .project import Project

    result = Project(args.project).import_labels(args.file, allow_unrequested=args.allow_unrequested,
                                                 partial=args.partial, allow_empty=args.allow_empty, split=args.split,
                                                 only_requested=args.only_requested)
    print(result["message"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .project import Project

    status = Project(args.project).status(plot=not args.no_plot)
    if args.json:
        print(json.dumps({k: v for k, v in status.items() if k != "lines"}, indent=2))
    else:
        print("\n".join(status["lines"]))
    return 0


def cmd_sample_images(args: argparse.Namespace) -> int:
    from .app.samples import write_sample_images

    made = write_sample_images(args.folder, args.task, args.count, args.seed)
    print(f"wrote {made['count']} images to {made['images']}; the answers an annotator would give are in "
          f"{made['truth']}, the classes in {made['classes']}")
    return 0


def _add_project_parsers(sub) -> None:
    plugins = _task_plugins()
    sample = sub.add_parser("sample-images", help="write bundled images (MNIST digits, digit canvases) as files, "
                            "with their true labels, to try the labeling workflow on")
    sample.add_argument("folder")
    sample.add_argument("--task", default="classification", choices=["classification", "detection"])
    sample.add_argument("--count", type=int, default=500)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample_images)
    init = sub.add_parser("init", help="start a labeling project on a folder of your own images")
    init.add_argument("project", help="the project folder to create")
    init.add_argument("--task", default="classification", help=f"one of {', '.join(n for n, _ in plugins)}")
    init.add_argument("--images", required=True, help="the folder of images (searched recursively); image ids are "
                      "paths relative to it")
    init.add_argument("--classes", type=_csv, default=None, help="comma-separated class names")
    init.add_argument("--classes-file", default=None, help="a text file with one class name per line")
    init.add_argument("--labels", default=None, help="labels you already have: a CSV (path,label), a COCO json or a "
                      "Label Studio JSON export")
    init.add_argument("--val", default=None, help="a labeled reference (validation) set, never trained on: the same "
                      "formats")
    init.add_argument("--seed", type=int, default=0, help="seeds every query's training and selection")
    init.add_argument("--image-url", default="/data/local-files/?d={path}", help="how tasks.json names an image for "
                      "Label Studio; {path} is its path under --document-root")
    init.add_argument("--document-root", default=None, help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                      "(default: the image folder's parent; Label Studio serves files below the root only)")
    init.add_argument("--allow-empty", action="store_true", help="an empty annotation means no object (detection)")
    init.add_argument("--quiet", action="store_true")
    init.set_defaults(func=cmd_init)
    add = sub.add_parser("add", help="record new images of the project's image folder (existing ids are kept)")
    add.add_argument("project")
    add.add_argument("folder", nargs="?", default=None, help="a folder under the image folder (default: all of it)")
    add.add_argument("--quiet", action="store_true")
    add.set_defaults(func=cmd_add)
    q = sub.add_parser("query", help="train on the labels so far and choose the next batch to label")
    q.add_argument("project")
    q.add_argument("--strategy", default="isal", help="a strategy's name (random or coreset for a cold start)")
    q.add_argument("--budget", type=int, required=True, help="images in the batch")
    q.add_argument("--val-share", type=float, default=None, help="share of the batch drawn at random for the "
                   "reference set (default: 0.2 while the project has none, else 0)")
    q.add_argument("--model", default=None, help="; ".join(f"{name}: {', '.join(pl.models().names())}"
                                                           for name, pl in plugins))
    q.add_argument("--weights", default=None, help="a local state dict to start from (matching names and shapes)")
    q.add_argument("--no-train", action="store_true", help="use the model (--weights) as it is")
    q.add_argument("--strategy-option", action="append", default=[], type=_option, metavar="NAME.KEY=VALUE",
                   help="a strategy's own setting, e.g. isal.solver=exact (repeatable)")
    q.add_argument("--device", default="auto")
    g = q.add_argument_group("training (a preset, then overrides)")
    g.add_argument("--train-preset", default=None, help="default: the task's (demo, detection)")
    add_arguments(g, TrainConfig, TRAIN_DEST)
    g = q.add_argument_group("influence (ISAL and its variants)")
    g.add_argument("--influence-preset", default=None, help=", ".join(INFLUENCE_PRESETS))
    add_arguments(g, InfluenceConfig, INFLUENCE_DEST)
    _add_task_flags(q, plugins, how="projects of task {name}", skip=PROJECT_SKIPS)
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_query)
    imp = sub.add_parser("import", help="merge annotators' answers: a Label Studio JSON export, a CSV or a COCO json")
    imp.add_argument("project")
    imp.add_argument("file")
    imp.add_argument("--allow-unrequested", action="store_true", help="accept answers for images no query asked for")
    imp.add_argument("--partial", action="store_true", help="merge what is answered; skipped and unanswered images "
                     "stay pending")
    imp.add_argument("--allow-empty", action="store_true", help="an empty annotation means the image holds no object")
    imp.add_argument("--only-requested", action="store_true", help="ignore (and count) answers for images no query "
                     "asked for, e.g. a file that answers every image")
    imp.add_argument("--split", default="train", choices=["train", "val"], help="where unrequested answers go")
    imp.set_defaults(func=cmd_import)
    st = sub.add_parser("status", help="counts, cost, the model's metric per round, the last query")
    st.add_argument("project")
    st.add_argument("--json", action="store_true")
    st.add_argument("--no-plot", action="store_true", help="do not write curves.png")
    st.set_defaults(func=cmd_status)


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
    _add_project_parsers(sub)
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


def _join_process_group(args: argparse.Namespace) -> None:
    """Under torchrun: join the process group (gloo on CPUs, NCCL on GPUs), give each rank its device, and keep
    every rank but 0 quiet (rank 0 alone writes files and reports)."""
    from .core import dist

    if not dist.launched():
        return
    device = dist.init_from_env(getattr(args, "device", "auto") or "auto")
    if hasattr(args, "device"):
        args.device = device
    if not dist.is_main() and hasattr(args, "quiet"):
        args.quiet = True


def _rank_prefix() -> str:
    from .core import dist

    return f"[rank {dist.rank()} of {dist.world_size()}] " if dist.active() else ""


def _lost_peer(exc: RuntimeError) -> bool:
    """Whether ``exc`` is torch.distributed reporting that another rank went away."""
    from .core import dist

    if not dist.launched():
        return False
    import torch.distributed as tdist

    text = str(exc).lower()
    return isinstance(exc, getattr(tdist, "DistError", ())) or any(
        word in text for word in ("gloo", "connection reset", "connection closed", "nccl", "broken pipe"))


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
        _join_process_group(args)
        return args.func(args)
    except InflualError as exc:
        print(f"influal: error: {_rank_prefix()}{exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        if not _lost_peer(exc):
            raise
        print(f"influal: error: {_rank_prefix()}lost contact with the other processes of this torch.distributed job "
              f"(one of them stopped: {(str(exc).splitlines() or [''])[0][:200]}); the last complete round is saved: "
              "run the same command again to resume", file=sys.stderr)
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
        from .core import dist

        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
