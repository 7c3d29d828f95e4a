"""Presets fill the paper's settings; explicit flags override them; paper presets insist on local data."""

import pytest

from influal.cli import build_config, main, make_parser
from influal.core.errors import ConfigError
from influal.loop.presets import PRESETS, get_preset
from influal.settings import INFLUENCE_PRESETS, TRAIN_PRESETS


def _config(*argv):
    return build_config(make_parser().parse_args(["run", "--out", "unused", *argv]))


def test_cifar10_preset_is_the_papers_protocol():
    cfg = _config("--preset", "cifar10", "--data-root", "/data")
    assert (cfg.dataset, cfg.model, cfg.initial, cfg.budget, cfg.rounds) == ("cifar10", "resnet18", 1000, 1000, 10)
    assert cfg.train == TRAIN_PRESETS["paper"] and cfg.train.epochs == 200 and cfg.train.milestones == (160,)
    assert cfg.strategy_settings["isal"] == INFLUENCE_PRESETS["paper"].to_dict()
    assert {"isal", "random", "coreset", "learning_loss"} <= set(cfg.strategies)
    assert _config("--preset", "svhn", "--data-root", "/d").initial == 1466
    large = _config("--preset", "cifar10-large", "--data-root", "/d")
    assert (large.initial, large.budget) == (5000, 5000)
    assert _config("--preset", "cifar100", "--data-root", "/d").dataset == "cifar100"


def test_explicit_flags_override_the_preset():
    cfg = _config("--preset", "cifar10", "--data-root", "/data", "--rounds", "3", "--epochs", "50",
                  "--strategies", "isal,random", "--solver", "cg", "--model", "resnet18-maxpool")
    assert cfg.rounds == 3 and cfg.initial == 1000
    assert cfg.train.epochs == 50 and cfg.train.milestones == () and cfg.train.lr == 0.1
    assert cfg.strategies == ("isal", "random") and cfg.model == "resnet18-maxpool"
    assert cfg.strategy_settings["isal"]["solver"] == "cg" and cfg.strategy_settings["isal"]["lissa_depth"] == 250


def test_without_a_preset_the_defaults_are_unchanged():
    cfg = _config()
    assert (cfg.dataset, cfg.model, cfg.strategies, cfg.initial, cfg.budget, cfg.rounds, cfg.seeds) == \
        ("mnist5k", "cnn", ("isal", "random"), 100, 100, 5, 3)
    assert cfg.train == TRAIN_PRESETS["demo"]


def test_offline_bench_preset_needs_no_data_root_and_names_the_benchmark_strategies():
    cfg = _config("--preset", "mnist5k-bench")
    assert cfg.dataset == "mnist5k" and cfg.seeds == 3
    assert set(cfg.strategies) == {"isal", "random", "coreset", "entropy", "learning_loss"}
    assert not get_preset("mnist5k-bench").needs_data_root
    assert all(PRESETS[n].needs_data_root for n in ("cifar10", "cifar100", "svhn", "cifar10-large"))
    low = _config("--preset", "mnist5k-low", "--strategies", "isal_diverse,margin")
    assert (low.initial, low.budget, low.rounds, low.seeds) == (40, 40, 8, 5)
    assert low.strategies == ("isal_diverse", "margin") and not get_preset("mnist5k-low").needs_data_root


def test_paper_presets_without_data_root_or_unknown_presets_fail_in_one_line(tmp_path, capsys):
    for argv, message in ((["--preset", "cifar10"], "needs --data-root"), (["--preset", "imagenet"], "unknown preset")):
        assert main(["run", "--out", str(tmp_path / "out"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError):
        get_preset("nope")
