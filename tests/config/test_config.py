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
        ("inference.truth.nuisance=3", r"inside the nuisance bounds \[0, 1.571\]"),
        ("inference.poi_bounds=[0, 2]", r"'inference.poi_bounds' = \[0.0, 2.0\]: expected \[low, high\] inside the model's"),
        ("inference.poi_bounds=[0.5, 0.1]", "'inference.poi_bounds'.*low < high"),
        ("inference.neyman.mu_max=1.5", "'inference.neyman.mu_min/mu_max'.*inside the POI bounds"),
        ("inference.nuisance_bounds=[0, 0.5]", "'inference.truth.nuisance' = 0.785"),
        ("inference.constraint=poisson", "'inference.constraint' = 'poisson': expected one of"),
        ("inference.constraint=lognormal", "'inference.nuisance_bounds'.*lognormal constraint needs a positive"),
        ("model.parameters.s=3", "'model.parameters.s' = 3.0: expected no parameters"),
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


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bounds_default_to_the_model_ranges_and_explicit_ones_are_the_same_config():
    cfg = load_config()
    assert cfg.inference.poi_bounds == (0.0, 1.0)
    assert cfg.inference.nuisance_bounds == pytest.approx((0.0, 3.141592653589793 / 2))
    assert load_config("default", ["inference.poi_bounds=[0, 1]"]) == cfg
    assert cfg.inference.constraint == "gaussian" and cfg.inference.constraint_sigma == 0.1


def test_truth_outside_the_poi_bounds_names_the_bounds():
    with pytest.raises(ConfigError, match=r"'inference.truth.mu' = 0.6: expected a signal fraction "
                                          r"in \[0, 0.5\] \(inference.poi_bounds\)"):
        load_config("default", ["inference.poi_bounds=[0, 0.5]", "inference.truth.mu=0.6"])


def test_lognormal_constraint_and_pooled_toys_are_refused_together():
    ok = ["inference.constraint=lognormal", "inference.nuisance_bounds=[0.1, 1.5]"]
    assert load_config("default", ok).inference.constraint == "lognormal"
    with pytest.raises(ConfigError, match="'inference.neyman.method' = 'pool': expected 'simulator'"):
        load_config("default", [*ok, "inference.neyman.method=pool"])


ON_OFF = """
model: {name: on_off, nuisance_reference: 1.0, parameters: %s}
inference:
  truth: {mu: %s, nuisance: 1}
  n_expected: 1
  constraint: none
  neyman: {mu_min: 0.2, mu_max: 0.8}
"""


def test_on_off_model_through_the_config(tmp_path):
    cfg = load_config(_write(tmp_path, "on_off.yaml", ON_OFF % ("{s: 20}", 0.5)))
    model = cfg.model.build()
    assert (model.s, model.b) == (20.0, 50.0)
    assert cfg.inference.poi_bounds == (0.0, 40.0) and cfg.inference.nuisance_bounds == (0.2, 3.0)


@pytest.mark.parametrize(
    "parameters, mu, match",
    [
        ("{}", 50, r"'inference.truth.mu' = 50.0: expected a signal strength \(signal yield / s\) in \[0, 40\]"),
        ("{s: -1}", 0.5, r"'model.parameters' = \{'s': -1.0\}: s = -1.0: expected a positive number"),
        ("{radius: 2}", 0.5, r"'model.parameters.radius' = 2.0: expected a parameter of model 'on_off'"),
        # signal and background of the same shape: mu s and nu (1 + tau) b are degenerate
        ("{signal_mean: 0, signal_sigma: 3}", 0.5,
         r"'inference.constraint' = 'none': expected 'gaussian' or 'lognormal': the data alone do not "
         r"determine the background normalisation nu \(expected Fisher width inf"),
    ],
)
def test_on_off_bad_input(tmp_path, parameters, mu, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, "on_off.yaml", ON_OFF % (parameters, mu)))


def test_a_free_nuisance_the_data_determine_is_accepted():
    cfg = load_config("default", ["inference.constraint=none"])
    assert cfg.inference.constraint == "none"


def test_a_data_driven_model_needs_an_explicit_neyman_grid():
    """The auto grid (null) is sized from the exact model's Fisher width; HiggsML has none."""
    from helpers import ROOT

    with pytest.raises(ConfigError, match="'inference.neyman.mu_min/mu_max'.*explicit values for model HiggsTES"):
        load_config(ROOT / "configs" / "higgs.yaml", ["inference.neyman.mu_min=null"])
