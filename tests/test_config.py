"""Settings validate at construction and round-trip through JSON."""

import json

import pytest

from influal.core.errors import ConfigError
from influal.loop.config import ExperimentConfig
from influal.settings import INFLUENCE_PRESETS, InfluenceConfig, TrainConfig


def test_round_trip_through_json():
    cfg = ExperimentConfig(strategies=("isal", "random", "bald"), train=TrainConfig.preset("paper"),
                           strategy_settings={"isal": {"preset": "paper"}, "bald": {"samples": 7}})
    again = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.strategy_settings["isal"] == INFLUENCE_PRESETS["paper"].to_dict()  # resolved: what ran, in full
    assert cfg.strategy_settings["bald"]["samples"] == 7 and cfg.strategy_settings["random"] == {}


def test_task_defaults_fill_dataset_model_recipe_and_settings_block():
    det = ExperimentConfig(task="detection")
    assert (det.dataset, det.model, det.train.lr, det.train.grad_clip) == ("digit-canvas", "fcos", 0.01, 10.0)
    assert type(det.task_settings).__name__ == "DetectionSettings"
    cls = ExperimentConfig()
    assert (cls.dataset, cls.model, cls.train.epochs) == ("mnist5k", "cnn", 30)
    with pytest.raises(ConfigError, match="unknown task 'segmentation'"):
        ExperimentConfig(task="segmentation")
    with pytest.raises(ConfigError, match="strategy_settings names coreset"):
        ExperimentConfig(strategy_settings={"coreset": {}})
    with pytest.raises(ConfigError, match="does not take the setting"):
        ExperimentConfig(strategy_settings={"random": {"temperature": 2}})


def test_paper_presets_hold_the_official_settings():
    train = TrainConfig.preset("paper")
    assert (train.epochs, train.lr, train.momentum, train.weight_decay, train.batch_size) == (200, 0.1, 0.9, 5e-4, 128)
    assert train.milestones == (160,) and train.augment == "flip_crop"
    inf = INFLUENCE_PRESETS["paper"]
    assert (inf.lissa_depth, inf.lissa_repeats, inf.damping, inf.scale, inf.scope) == (250, 4, 0.01, 1e4, "weights")
    assert inf.effective_damping == pytest.approx(100.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=0), "rounds"), (dict(seeds=-1), "seeds"), (dict(budget=0), "budget"),
    (dict(strategies=()), "at least one"), (dict(strategies=("isal", "isal")), "twice"),
])
def test_experiment_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**kwargs)


def test_nested_validation_messages():
    with pytest.raises(ConfigError, match="train.milestones"):
        TrainConfig(epochs=10, milestones=(20,))
    with pytest.raises(ConfigError, match="influence.scope"):
        InfluenceConfig(scope="everything")
    with pytest.raises(ConfigError, match="unknown setting"):
        InfluenceConfig.from_dict({"scop": "last"})
