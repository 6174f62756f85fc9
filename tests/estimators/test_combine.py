"""Combining and calibrating ensemble members: fitted weights, median/mean, temperature,
isotonic, self-normalisation, and an exact JSON round trip of the fitted parameters.

The constructed classification problem: numerator ``x ~ N(+a, 1)`` against reference
``x ~ N(-a, 1)`` with equal class sizes, whose exact log ratio is ``2 a x``.
"""

import numpy as np
import pytest
import torch
from scipy import special

from hsbi.diagnostics import expected_calibration_error
from hsbi.estimators import (
    Combination,
    CombinedEnsemble,
    LREEnsemble,
    RatioNet,
    fit_combination,
    load_combined,
    save_combination,
    save_member,
)
from hsbi.estimators.combine import (
    ProcessCombination,
    balanced_bce,
    fit_isotonic,
    fit_normalisation,
    fit_temperature,
    fit_weights,
    pool_adjacent_violators,
)
from hsbi.exceptions import DataError

N = 20_000  # events per class


def _problem(seed: int, a: float = 1.0):
    """``x (2N,)``, labels ``y (2N,)`` and the exact log ratio ``(2N,)``."""
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(a, 1, N), rng.normal(-a, 1, N)]
    y = np.r_[np.ones(N), np.zeros(N)]
    return x, y, 2 * a * x


def test_fitted_weights_drop_bad_members():
    x, y, true = _problem(0)
    rng = np.random.default_rng(1)
    good = [true + rng.normal(0, 0.3, len(x)) for _ in range(2)]
    bad = [-true, rng.normal(0, 2, len(x))]  # anti-correlated; unrelated to x
    w = fit_weights(np.stack(good + bad), y)
    assert w.min() >= 0 and w.sum() == pytest.approx(1, abs=1e-12)
    assert w[2] < 0.01 and w[3] < 0.01, w
    assert w[0] == pytest.approx(0.5, abs=0.1) and w[1] == pytest.approx(0.5, abs=0.1), w
    assert balanced_bce(w @ np.stack(good + bad), y) < balanced_bce(np.mean(good + bad, 0), y)


def test_mean_and_median_combinations():
    member = np.random.default_rng(2).normal(size=(5, 7, 3))
    member[4] += 50.0  # one wild member moves the mean, not the median
    pc = ProcessCombination()
    assert np.array_equal(pc.combine("mean", member), member.mean(0))
    assert np.array_equal(pc.combine("median", member), np.median(member, 0))
    assert np.abs(pc.combine("median", member)).max() < 5
    weighted = ProcessCombination(weights=(0.0, 0.25, 0.25, 0.5, 0.0))
    assert np.allclose(weighted.combine("weighted", member), 0.25 * member[1] + 0.25 * member[2] + 0.5 * member[3])


def test_temperature_recovers_a_known_scale():
    x, y, true = _problem(3)
    k = 2.5  # an over-confident classifier: logit k * (exact log ratio)
    t = fit_temperature(k * true, y)
    p = special.expit(true)
    sigma_scale = 1 / np.sqrt(np.sum(p * (1 - p) * (k * true) ** 2))  # Fisher width of 1 / T
    assert abs(t - k) < 4 * k**2 * sigma_scale, (t, k**2 * sigma_scale)


def test_pool_adjacent_violators_small_case():
    values, weights, ends = pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0, 0.0]), np.ones(5))
    assert np.allclose(values, [1.0, 2.25]) and np.allclose(weights, [1, 4]) and list(ends) == [1, 5]


def test_isotonic_is_strictly_monotone_and_calibrates():
    x, y, true = _problem(4)
    distorted = np.sign(true) * np.abs(true) ** 1.5 / 3 + 0.7  # monotone, miscalibrated
    knots_in, knots_out = fit_isotonic(distorted[::2], y[::2])
    assert np.all(np.diff(knots_in) > 0) and np.all(np.diff(knots_out) > 0)
    pc = ProcessCombination(knots=(knots_in, knots_out))
    grid = np.linspace(distorted.min() - 5, distorted.max() + 5, 10_001)
    assert np.all(np.diff(pc.calibrate(grid)) > 0)
    test_prob = special.expit(pc.calibrate(distorted[1::2]))
    before = expected_calibration_error(special.expit(distorted[1::2]), y[1::2])
    after = expected_calibration_error(test_prob, y[1::2])
    assert before["ece"] > before["ece_null"] + 10 * before["ece_null_sd"]
    assert after["ece"] < after["ece_null"] + 4 * after["ece_null_sd"], after


def test_self_normalisation_recovers_a_nuisance_dependent_offset():
    rng = np.random.default_rng(5)
    a = 0.25
    x_ref = rng.normal(-a, 1, 4 * N)
    z = rng.uniform(0, 1.5, len(x_ref))
    offset = 0.1 - 0.2 * z + 0.3 * z**2
    coeffs = fit_normalisation(2 * a * x_ref + offset, z)
    fitted = np.polynomial.polynomial.polyval(z, coeffs)
    # per bin of 1/8 of the events, the log mean of r has sd ~ sd(r) / sqrt(n_bin) (E r = 1)
    sd_log_mean = np.exp(2 * a * x_ref).std() / np.sqrt(len(x_ref) / 8)
    assert np.abs(fitted - offset).max() < 4 * sd_log_mean


def _ensemble(members: int = 3, nuisances: int = 1) -> LREEnsemble:
    torch.manual_seed(0)
    return LREEnsemble([{p: RatioNet(2, [8, 8], n_nuisances=nuisances).eval() for p in ("signal", "background")}
                        for _ in range(members)])


def _fitted(ens: LREEnsemble, method: str, calibration: str, normalise: bool) -> Combination:
    rng = np.random.default_rng(6)
    x, z = rng.normal(size=(600, 2)), rng.uniform(0, 1.5, 600)
    logits = ens.member_log_ratios(x, z)
    y = (rng.uniform(size=600) < special.expit(logits.mean(0)[:, 0] * 3)).astype(float)
    return fit_combination({p: (logits[..., c], y, z) for c, p in enumerate(ens.processes)},
                           method, calibration, normalise)


def test_combined_ensemble_evaluates_members_on_the_grid():
    ens = _ensemble()
    x, grid = np.random.default_rng(7).normal(size=(50, 2)), np.array([0.1, 0.8, 1.4])
    plain = CombinedEnsemble(ens, _fitted(ens, "mean", "none", False))
    assert np.array_equal(plain.log_components(x, grid), ens.log_components(x, grid))
    median = CombinedEnsemble(ens, _fitted(ens, "median", "none", False))
    per_point = np.stack([np.median(ens.member_log_ratios(x, np.full(len(x), z)), 0) for z in grid])
    assert np.allclose(median.log_components(x, grid), per_point, atol=1e-12)
    spread = median.spread(x, grid)
    assert spread.shape == (3, 50, 2) and np.all(spread > 0)


def test_json_round_trip_is_exact(tmp_path):
    ens = _ensemble()
    comb = _fitted(ens, "weighted", "isotonic", True)
    assert comb.processes[0][1].knots is not None and comb.processes[0][1].normalisation is not None
    paths = []
    for m, member in enumerate(ens.members):
        save_member(tmp_path / f"m{m}", member)
        paths.append(tmp_path / f"m{m}")
    save_combination(tmp_path / "combination.json", comb)
    loaded = load_combined(paths, tmp_path / "combination.json")
    assert loaded.combination == comb
    x, grid = np.random.default_rng(8).normal(size=(40, 2)), np.array([0.2, 1.1])
    assert np.array_equal(loaded.log_components(x, grid), CombinedEnsemble(ens, comb).log_components(x, grid))
    assert Combination.from_dict(_fitted(ens, "mean", "temperature", False).to_dict()).processes[1][1].temperature


def test_mismatched_or_malformed_combination_is_a_data_error(tmp_path):
    comb = _fitted(_ensemble(3), "mean", "none", False)
    with pytest.raises(DataError, match="2 members"):
        CombinedEnsemble(_ensemble(2), comb)
    (tmp_path / "c.json").write_text('{"format": 1, "method": "vote"}')
    with pytest.raises(DataError, match="c.json"):
        load_combined([], tmp_path / "c.json")


def test_grid_of_several_nuisances():
    ens = _ensemble(nuisances=2)
    rng = np.random.default_rng(9)
    x, z, grid = rng.normal(size=(30, 2)), rng.uniform(size=(30, 2)), rng.uniform(size=(4, 2))
    logits = ens.member_log_ratios(x, z)
    y = (rng.uniform(size=30) < 0.5).astype(float)
    comb = fit_combination({p: (logits[..., c], y, z) for c, p in enumerate(ens.processes)}, "median")
    per_point = np.stack([np.median(ens.member_log_ratios(x, np.tile(g, (len(x), 1))), 0) for g in grid])
    assert np.allclose(CombinedEnsemble(ens, comb).log_components(x, grid), per_point, atol=1e-12)
