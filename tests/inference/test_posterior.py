"""Set posteriors: streaming updates, credible intervals, SBC statistics, method comparison."""

import numpy as np
import pytest
import torch

from hsbi.estimators.npe import SetNPE, StreamingPosterior
from hsbi.estimators.sets import DeepSet, SetTransformer
from hsbi.exceptions import ConfigError, DataError
from hsbi.inference.posterior import (
    compare_posteriors,
    credible_interval,
    expected_coverage,
    method_densities,
    nominal_coverage,
    rank_uniformity,
    stream,
    summarise,
)
from hsbi.models.bump_hunt import BumpHunt

GRID = np.linspace(0.0025, 0.9975, 200)


def _npe(encoder="deepset", max_set_size=100):
    torch.manual_seed(0)
    enc = (DeepSet(1, [32, 32], latent=16, summary=8, size_scale=100.0) if encoder == "deepset"
           else SetTransformer(1, [16], width=8, heads=2, summary=8))
    return SetNPE(enc.hparams, [(0.0, 1.0)], ["f"], widths=[32], transforms=2, max_set_size=max_set_size).eval()


def test_streaming_10_steps_of_10_equals_100_at_once():
    npe = _npe()
    x, _ = BumpHunt().simulate(np.random.default_rng(0), np.array([[0.4, 2.0]]))
    out = stream(npe, x, 10, GRID)
    assert out["steps"].shape == (10, len(GRID))
    # float64 summaries: equal to rounding; the float32 batch path to float32 precision
    np.testing.assert_allclose(out["steps"][-1], out["all_at_once"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["all_at_once"], out["batch"], rtol=0, atol=2e-4)
    # the stored state is all the posterior needs: restart from it, add the last 10 events
    post = StreamingPosterior(npe).update(x[:90])
    again = StreamingPosterior.from_state(npe, post.state()).update(x[90:])
    np.testing.assert_allclose(again.log_prob(GRID[:, None]), out["all_at_once"], atol=1e-6)


def test_streaming_bad_input():
    npe = _npe(max_set_size=20)
    post = StreamingPosterior(npe)
    with pytest.raises(DataError, match="has seen no events"):
        post.log_prob(GRID[:, None])
    with pytest.raises(DataError, match="streaming update with no events"):
        post.update(np.zeros((0, 1)))
    post.update(np.zeros((15, 1)))
    with pytest.raises(DataError, match="to 25 events, more than the largest set size .* \\(20\\)"):
        post.update(np.zeros((10, 1)))
    with pytest.raises(DataError, match=r"f = 0, outside the prior's support"):
        post.log_prob(np.array([[0.0]]))
    with pytest.raises(ConfigError, match="sets.encoder = 'deepset'"):
        StreamingPosterior(_npe("transformer"))


def test_credible_intervals_of_a_gaussian():
    x = np.linspace(-8, 8, 4001)
    p = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    low, high = credible_interval(x, p, 0.6827)
    assert low == pytest.approx(-1.0, abs=1e-3) and high == pytest.approx(1.0, abs=1e-3)
    s = summarise(x, p, (0.95,))
    assert s.mean == pytest.approx(0.0, abs=1e-9) and s.std == pytest.approx(1.0, abs=1e-6)
    assert s.intervals[0.95] == pytest.approx((-1.96, 1.96), abs=2e-3)


def test_sbc_statistics_tell_calibrated_from_overconfident():
    rng = np.random.default_rng(1)
    calibrated = rng.integers(0, 101, 2000)
    cov = expected_coverage(calibrated, 100, (0.5, 0.9, 0.95))
    for cl in (0.5, 0.9, 0.95):
        c = cov[f"{cl:g}"]
        assert c["nominal"] == nominal_coverage(100, cl)
        assert abs(c["value"] - c["nominal"]) < 3 * c["error"]
    assert nominal_coverage(100, 0.95) == 95 / 101  # ranks 3..97 of 0..100: not 0.95
    assert rank_uniformity(calibrated, 100)["p_value"] > 0.001
    # overconfident posteriors put the truth in the tails: U-shaped ranks
    tails = np.where(rng.uniform(size=2000) < 0.5, rng.integers(0, 10, 2000), rng.integers(91, 101, 2000))
    assert rank_uniformity(tails, 100)["p_value"] < 1e-6
    assert expected_coverage(tails, 100, (0.5,))["0.5"]["value"] < 0.1


def test_method_comparison_on_the_same_sets():
    model = BumpHunt()
    rng = np.random.default_rng(2)
    theta = np.array([[0.3, 3.0], [0.6, -1.5], [0.2, 4.0]])
    events, lengths = model.simulate(rng, theta)
    dens = method_densities(_npe(), model, events, lengths, GRID)
    assert set(dens) == {"set", "exact", "per_event"} and dens["exact"].shape == (3, len(GRID))
    out = compare_posteriors(dens, GRID, theta[:, 0], (0.6827,))
    assert out["exact"]["mean_std"] < out["per_event"]["mean_std"]
    assert out["exact"]["0.6827"]["mean_width"] < out["per_event"]["0.6827"]["mean_width"]
