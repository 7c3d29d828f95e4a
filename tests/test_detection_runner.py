"""Detection experiments end to end: the loop, the target-AP mode, the reports and the CLI."""

import json

import pytest
from detection_utils import one_thread

from influal.app.run import run_experiment
from influal.cli import main
from influal.core.errors import ConfigError
from influal.loop import Experiment
from influal.loop.config import ExperimentConfig
from influal.settings import TrainConfig
from influal.tasks.detection.settings import DetectionSettings

TINY = dict(task="detection", dataset="digit-canvas", initial=4, budget=3, rounds=2, seeds=1, val_size=4,
            test_size=4, train=TrainConfig(epochs=1, lr=0.01, batch_size=4, milestones=(), weight_decay=1e-4,
                                           grad_clip=10.0),
            task_settings=DetectionSettings(image_size=48, pool_size=12, batch_size=4))
ISAL_FAST = {"lissa_depth": 2, "lissa_repeats": 1, "batch_size": 4}


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def test_detection_experiment_runs_every_detection_strategy_and_reports_boxes(tmp_path):
    config = ExperimentConfig(strategies=("isal", "random", "localization_stability", "det_coreset",
                                          "det_learning_loss"), data_root=str(tmp_path / "data"),
                              strategy_settings={"isal": ISAL_FAST}, **TINY)
    states = run_experiment(config, tmp_path / "out")
    experiment_pool = Experiment.prepare(config, tmp_path / "out").splits.pool
    for (name, _seed), state in states.items():
        first, second = state.rounds
        assert set(first.metrics) == {"AP", "AP50", "AP75"}
        assert len(first.selected) == 3 and not second.selected
        assert first.cost == experiment_pool.num_boxes(state.labeled_ids[:4])
        assert second.cost == experiment_pool.num_boxes(state.labeled_ids)
    isal = states[("isal", 0)].rounds[0].selection
    assert isal["scored"] == 8 and isal["solver"] == "lissa"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## AP @ ground-truth boxes" in report and "## Boxes saved against random at equal AP" in report
    assert "## Boxes to reach AP" in report and "Labels to reach" not in report  # its cost is counted in boxes
    assert "d(boxes)" in report and "(%)" not in report  # AP as a fraction, as the supplement's tables
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["task"] == "detection" and saved["task_settings"]["score_threshold"] == 0.1
    assert saved["model"] == "fcos" and saved["version"] == 2


def test_target_ap_mode_stops_a_run_at_the_first_round_that_reaches_it(tmp_path):
    config = ExperimentConfig(strategies=("random",), data_root=str(tmp_path / "data"),
                              **{**TINY, "rounds": 3, "stop_at": 0.4})
    experiment = Experiment.prepare(config, tmp_path / "out")
    aps = iter([0.2, 0.5, 0.9])
    experiment.task.evaluate = lambda model, dataset, ids=None: {"AP": next(aps)}
    state = experiment.run()[("random", 0)]
    assert [r.metrics["AP"] for r in state.rounds] == [0.2, 0.5]
    assert len(state.rounds[0].selected) == 3 and state.rounds[1].selected == []


def test_detection_config_checks_strategy_scope_and_dataset(tmp_path):
    base = {**TINY, "data_root": str(tmp_path / "data")}
    for changes, message in [({"strategies": ("entropy",)}, "needs probabilities"),
                             ({"strategy_settings": {"isal": {"scope": "last"}}}, "scope 'last'"),
                             ({"dataset": "mnist5k"}, "unknown detection dataset"),
                             ({"dataset": "voc"}, "needs --data-root")]:
        config = ExperimentConfig(**{**base, **changes})
        if changes.get("dataset") == "voc":
            config = config.replace(data_root=None)
        with pytest.raises(ConfigError, match=message):
            Experiment.prepare(config, tmp_path / "never")
    with pytest.raises(ConfigError, match="unknown detector family 'yolo'"):
        Experiment.prepare(ExperimentConfig(**{**base, "model": "yolo"}), tmp_path / "never")


def test_cli_runs_faster_rcnn_and_rejects_detection_flags_without_the_task(tmp_path, capsys):
    args = ["run", "--task", "detection", "--model", "fasterrcnn", "--image-size", "48", "--pool-size", "10",
            "--val-size", "3", "--test-size", "3", "--initial", "4", "--budget", "2", "--rounds", "2", "--seeds", "1",
            "--epochs", "1", "--strategies", "isal", "--lissa-depth", "2", "--lissa-repeats", "1",
            "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model"] == "fasterrcnn" and config["dataset"] == "digit-canvas"
    assert config["train"]["lr"] == 0.01 and config["train"]["warmup_iters"] == 50  # the detection recipe by default
    assert "AP @ ground-truth boxes" in capsys.readouterr().out
    assert main(["run", "--backbone", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "--backbone only apply to --task detection" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_deprecated_detector_flag_still_selects_the_family_and_says_so(tmp_path, capsys):
    from influal.cli import build_config, make_parser

    args = make_parser().parse_args(["run", "--detector", "fasterrcnn", "--target-ap", "40", "--out", "x"])
    config = build_config(args)
    assert config.task == "detection" and config.model == "fasterrcnn" and config.stop_at == 0.4
    err = capsys.readouterr().err
    assert "--detector is deprecated; use --model" in err and "--target-ap is deprecated; use --stop-at" in err


def test_coco_json_folders_get_a_reference_split_held_out_of_the_pool(tmp_path):
    import shutil

    from influal.tasks import get_task
    from influal.tasks.detection.datasets.canvas import write_digit_canvas

    load_detection_splits = get_task("detection").load_data

    from detection_utils import SPEC

    root = write_digit_canvas(tmp_path / "src", SPEC)
    shutil.copy(root / "pool.json", root / "train.json")
    config = ExperimentConfig(**{**TINY, "dataset": "coco", "data_root": str(root), "val_size": 3})
    assert len(load_detection_splits(config).val) == SPEC.val  # a val.json is the reference set as it is
    (root / "val.json").unlink()
    splits = load_detection_splits(config)
    pool_ids = {splits.pool.image_id(i) for i in range(len(splits.pool))}
    val_ids = {splits.val.image_id(i) for i in range(len(splits.val))}
    assert len(val_ids) == 3 and len(pool_ids) == SPEC.pool - 3 and not pool_ids & val_ids
    assert len(splits.test) == 4 and splits.num_classes == 10  # test_size 4 of the 6 test images
    # the held-out images keep their boxes: nothing is lost or duplicated
    total = splits.pool.num_boxes(range(len(splits.pool))) + splits.val.num_boxes(range(3))
    assert total == len(json.loads((root / "train.json").read_text())["annotations"])
