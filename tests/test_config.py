"""Settings validate at construction and round-trip through JSON."""

import json

import pytest

from influal.config import INFLUENCE_PRESETS, ExperimentConfig, InfluenceConfig, TrainConfig
from influal.errors import ConfigError


def test_round_trip_through_json():
    cfg = ExperimentConfig(strategies=("isal", "random"), train=TrainConfig.preset("paper"),
                           influence=INFLUENCE_PRESETS["paper"])
    again = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


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
