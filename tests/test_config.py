from __future__ import annotations

import pytest

from flows.config import CONF_DIR, Preset, apply_overrides, load_config, parse_assignment
from tasks.config import ConfigError, validate_config


@pytest.mark.parametrize("preset", ["default", "fraud", "wine", "diabetes"])
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert cfg.data.source.startswith("builtin:")
    assert preset in Preset.__members__


def test_preset_can_be_named_by_path():
    assert load_config(str(CONF_DIR / "fraud.yaml")) == load_config("fraud")


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(
        ConfigError,
        match=r"train\.num_boost_roun: unknown key \(did you mean 'num_boost_round'\?\)",
    ):
        load_config("default", {"train.num_boost_roun": 5})


def test_unknown_top_level_section_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"trainer: unknown key \(did you mean 'train'\?\)"):
        validate_config({"data": {"source": "builtin:wine"}, "trainer": {}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.num_boost_round: .*integer.*\(got 'many'\)"):
        load_config("default", {"train.num_boost_round": "many"})


def test_out_of_range_value_is_refused():
    with pytest.raises(ConfigError, match=r"split\.test: Input should be less than 1"):
        load_config("default", {"split.test": 1.5})
    with pytest.raises(ConfigError, match=r"split.valid \+ split.test = 0.9 leaves too few rows"):
        load_config("default", {"split.test": 0.5, "split.valid": 0.4})


def test_missing_data_source_is_required():
    with pytest.raises(ConfigError, match=r"data: required key is missing"):
        validate_config({})


def test_cluster_address_and_kind_go_together():
    with pytest.raises(ConfigError, match="cluster.kind 'address' needs cluster.address"):
        load_config("default", {"cluster.kind": "address"})
    with pytest.raises(ConfigError, match="set cluster.kind to 'address'"):
        load_config("default", {"cluster.address": "tcp://127.0.0.1:8786"})


def test_config_is_frozen():
    cfg = load_config("default")
    with pytest.raises(Exception, match="frozen"):
        cfg.train.num_boost_round = 3  # type: ignore[misc]


def test_assignments_parse_yaml_scalars():
    assert parse_assignment("train.num_boost_round=50") == ("train.num_boost_round", 50)
    assert parse_assignment("train.params.learning_rate=0.05") == (
        "train.params.learning_rate",
        0.05,
    )
    assert parse_assignment("data.target=species") == ("data.target", "species")
    assert parse_assignment("train.early_stopping_rounds=null") == (
        "train.early_stopping_rounds",
        None,
    )
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_assignment("train.num_boost_round")


def test_overrides_reach_nested_xgboost_params_without_touching_the_preset():
    raw = {"train": {"params": {"max_depth": 4}}}
    out = apply_overrides(raw, {"train.params.max_depth": 8, "train.params.subsample": 0.5})
    assert out["train"]["params"] == {"max_depth": 8, "subsample": 0.5}
    assert raw["train"]["params"] == {"max_depth": 4}


def test_unknown_preset_or_missing_file():
    with pytest.raises(ConfigError, match="neither a preset .*default.* nor a YAML file"):
        load_config("no-such-preset")


def test_null_override_turns_an_option_off():
    assert (
        load_config("default", {"train.early_stopping_rounds": None}).train.early_stopping_rounds
        is None
    )
