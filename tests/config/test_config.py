"""Analysis configs: defaults, expressions, overrides and errors that name the key or file."""

import pytest

from hsbi.config import load_config
from hsbi.exceptions import ConfigError


def test_default_config_loads():
    cfg = load_config()
    assert cfg.model.name == "gaussian_rotation"
    assert cfg.model.nuisance_reference == pytest.approx(0.7853981633974483)
    assert cfg.inference.neyman.grid[0] == cfg.inference.neyman.mu_min
    assert len(cfg.inference.neyman.grid) == cfg.inference.neyman.points


def test_pi_expressions_and_overrides():
    cfg = load_config("default", ["inference.truth.nuisance=0.35*pi", "training.max_epochs=3"])
    assert cfg.inference.truth.nuisance == pytest.approx(0.35 * 3.141592653589793)
    assert cfg.training.max_epochs == 3


@pytest.mark.parametrize(
    "override, match",
    [
        ("trainng.max_epochs=3", "unknown config key 'trainng'"),
        ("training.epochs=3", "unknown config key 'training.epochs'"),
        ("inference.truth.mu=-0.1", "'inference.truth.mu' = -0.1: expected a signal fraction in"),
        ("training.learning_rate=0", "'training.learning_rate' = 0.0: expected a positive"),
        ("estimator.widths=[64, 0]", "'estimator.widths'"),
        ("estimator.kind=bogus", "'estimator.kind' = 'bogus'"),
        ("training.members=two", "'training.members' = 'two': expected an integer"),
        ("inference.truth.nuisance=3", "inside the model's nuisance range"),
        ("model.radius=.nan", "expected a finite number"),
        ("model.radius=nan", "expected a number"),
    ],
)
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("default", [override])


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"config file {missing} does not exist"):
        load_config(missing)


def test_invalid_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {members: [\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)
