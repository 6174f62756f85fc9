"""The HiggsML TES model: features from the PRI_ columns, alpha's action, sampling, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from hsbi.config import load_config
from hsbi.exceptions import ConfigError, DataError
from hsbi.models.higgs_tes import TES_COLUMNS, HiggsTES, tes_features
from tests.helpers import ROOT

HIGGS = ROOT / "tests" / "data" / "higgs" / "higgsml2014_v2_prefix22889.parquet"
CONFIG = ROOT / "configs" / "higgs.yaml"


@pytest.fixture(scope="module")
def table():
    return pq.read_table(HIGGS, columns=[*TES_COLUMNS, "DER_mass_vis", "DER_pt_ratio_lep_tau", "Weight", "Label"]).to_pandas()


@pytest.fixture(scope="module")
def model(table):
    cols = table[list(TES_COLUMNS)].to_numpy()
    y = (table.Label == "s").to_numpy().astype(np.int64)
    half = len(cols) // 2
    return HiggsTES().with_events({"train": (cols[:half], table.Weight.to_numpy()[:half], y[:half]),
                                   "test": (cols[half:], table.Weight.to_numpy()[half:], y[half:])})


def test_features_match_the_extracts_derived_columns(table):
    """At alpha = 1 the massless visible mass and the pT ratio equal the extract's DER_ columns
    up to the rounding of the stored values (3 decimals)."""
    raw = tes_features(table[list(TES_COLUMNS)].to_numpy(), 1.0, log=False)
    dm = raw[:, 0] - table.DER_mass_vis.to_numpy()
    assert np.median(np.abs(dm)) < 0.05 and np.abs(dm).max() < 0.5  # GeV, measured 0.015 and 0.23
    np.testing.assert_allclose(raw[:, 1], table.DER_pt_ratio_lep_tau.to_numpy(), atol=1e-3)


def test_alpha_scales_mass_by_sqrt_and_ratio_by_inverse(table):
    cols = table[list(TES_COLUMNS)].to_numpy()[:500]
    one, scaled = tes_features(cols, 1.0, log=False), tes_features(cols, 1.07, log=False)
    np.testing.assert_allclose(scaled[:, 0], np.sqrt(1.07) * one[:, 0], rtol=1e-12)
    np.testing.assert_allclose(scaled[:, 1], one[:, 1] / 1.07, rtol=1e-12)
    # in the network features (logs) alpha is a shift along (1/2, -1) log(alpha)
    shift = tes_features(cols, 1.07) - tes_features(cols, 1.0)
    np.testing.assert_allclose(shift, np.broadcast_to([0.5 * np.log(1.07), -np.log(1.07)], shift.shape), atol=1e-12)


def test_nonphysical_tes_is_refused(table):
    cols = table[list(TES_COLUMNS)].to_numpy()[:10]
    with pytest.raises(DataError, match=r"alpha = -0.1 makes the visible mass squared non-physical.*10 of 10"):
        tes_features(cols, -0.1)


def test_sampling_follows_weights_and_alpha(model):
    rng = np.random.default_rng(0)
    x = model.for_split("test").sample(rng, "background", np.full(20000, 1.05))
    assert x.shape == (20000, 2) and np.all(np.isfinite(x))
    with pytest.raises(DataError, match=r"alpha = 1.2 is outside the trained range \[0.9, 1.1\]"):
        model.sample(rng, "signal", np.array([1.2]))
    with pytest.raises(DataError, match="no events of split 'validation'"):
        model.for_split("validation").sample(rng, "signal", np.array([1.0]))
    with pytest.raises(DataError, match="no exact likelihood"):
        model.log_components(x, np.array([1.0]))


def test_weighted_draws_reproduce_the_weighted_mean(model, table):
    """Draws of a process follow its weights: the mean log m_vis of 200k draws matches the
    weighted mean of the split within 4 standard errors of the draws."""
    ev_x, p = model.for_split("test").process_events("background", 1.0)
    draws = model.for_split("test").sample(np.random.default_rng(3), "background", np.ones(200_000))
    mean, sd = float(p @ ev_x[:, 0]), float(np.sqrt(p @ (ev_x[:, 0] - p @ ev_x[:, 0]) ** 2))
    assert abs(draws[:, 0].mean() - mean) < 4 * sd / np.sqrt(len(draws))


def test_split_without_a_process_is_refused(table):
    cols = table[list(TES_COLUMNS)].to_numpy()[:20]
    with pytest.raises(DataError, match="split 'train' has no signal events"):
        HiggsTES().with_events({"train": (cols, np.ones(20), np.zeros(20, dtype=np.int64))})


def test_config_checks_the_tes_range():
    with pytest.raises(ConfigError, match="alpha_min = -0.1.*expected 0 < alpha_min < 1 < alpha_max"):
        load_config(CONFIG, ("model.parameters.alpha_min=-0.1",))
    with pytest.raises(ConfigError, match=r"inference.truth.nuisance' = 1.15.*\[0.9, 1.1\]"):
        load_config(CONFIG, ("inference.truth.nuisance=1.15",))
    with pytest.raises(ConfigError, match=r"inference.nuisance_bounds' = \[0.7, 1.1\].*inside the model's range"):
        load_config(CONFIG, ("inference.nuisance_bounds=[0.7, 1.1]",))
