"""Set-level profile likelihoods: scans against the project's exact fits, toys, coverage."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import chi2

from hsbi.data import Dataset
from hsbi.exceptions import DataError
from hsbi.inference import asymptotic_interval, fit_observed, make_likelihood
from hsbi.inference.sets import (
    coverage_summary,
    fit_grids,
    fit_set,
    infer_set_profile,
    observed_set,
    profile_set,
    set_interval,
    set_toys,
    toy_t_values,
    toy_window,
)
from hsbi.models import OnOffMixture
from hsbi.models.bump_hunt import OnOffSets

SETS = OnOffSets(poi_prior=(0.0, 15.0), nuisance_prior=(0.5, 1.5))


def test_exact_set_profile_reproduces_the_project_fit():
    """The set-level scan of the exact on/off likelihood gives the intervals of
    hsbi.inference.fit_observed (free nu) on the same data."""
    x = observed_set(SETS, (6.0, 1.0), seed=4)
    model = OnOffMixture()
    fit = fit_observed(model, make_likelihood(model, 1.0, None, nuisance_bounds=(0.5, 1.5)), Dataset(x, 1.0))
    prof = profile_set(SETS, x, np.linspace(0, 15, 121), np.linspace(0.5, 1.5, 41))
    assert prof.poi_hat == pytest.approx(fit.mu_hat, abs=0.02)
    for cl in (0.6827, 0.95):
        ref, mine = asymptotic_interval(fit, cl), set_interval(prof, cl)
        assert mine.low == pytest.approx(ref.low, abs=0.01) and mine.high == pytest.approx(ref.high, abs=0.01)


def test_set_fit_through_the_fitting_interface_equals_the_project_fit():
    """The observed fit of a set (MIGRAD, HESSE, MINOS through hsbi.inference.fitting, seeded by
    the grid) on the exact on/off set likelihood equals fit_observed of the same model (free
    nu): best fit and MINOS edges within 1e-3 of the 68.3% width, HESSE within 1%."""
    x = observed_set(SETS, (6.0, 1.0), seed=4)
    model = OnOffMixture()
    fit = fit_observed(model, make_likelihood(model, 1.0, None, nuisance_bounds=(0.5, 1.5)), Dataset(x, 1.0))
    prof = profile_set(SETS, x, np.linspace(0, 15, 121), np.linspace(0.5, 1.5, 41))
    result = fit_set(SETS, SETS, x, prof, (0.6827, 0.95))
    width = asymptotic_interval(fit, 0.6827).high - asymptotic_interval(fit, 0.6827).low
    assert result["valid"]
    assert result["best_fit"][SETS.poi_name] == pytest.approx(fit.mu_hat, abs=1e-3 * width)
    assert result["best_fit"][SETS.nuisance_name] == pytest.approx(fit.nuisance_hat, abs=1e-3)
    assert result["hesse"][SETS.poi_name] == pytest.approx(fit.best.error("mu"), rel=0.01)
    for cl, key in ((0.6827, "68"), (0.95, "95")):
        ref = asymptotic_interval(fit, cl)
        assert result["minos"][key] == pytest.approx([ref.low, ref.high], abs=1e-3 * width)


def test_toys_t_follows_chi2_for_the_exact_likelihood():
    """Wilks regime (160 events): t(mu_true) of exact toys is chi2(1) within binomial errors
    at 68.3%; no failed fits on the window."""
    x = observed_set(SETS, (6.0, 1.0), seed=4)
    prof = profile_set(SETS, x, *fit_grids(SETS, 61))
    toys = set_toys(SETS, (6.0, 1.0), 120, seed=9)
    t, failed = toy_t_values(SETS, toys, 6.0, *toy_window(SETS, prof, 6.0))
    assert failed == 0 and np.isfinite(t).all()
    p = np.mean(t < 1.0)
    assert abs(p - 0.6827) < 3 * np.sqrt(0.6827 * 0.3173 / len(t))


def _nested_t(events, mu, poi, nuisance):
    """t(mu) of the exact set likelihood by nested bounded 1-D minimisations (to 1e-10)."""
    def profiled(m):
        return minimize_scalar(lambda v: -SETS.log_likelihood(events, np.array([[m, v]]))[0], method="bounded",
                               bounds=(nuisance[0], nuisance[-1]), options={"xatol": 1e-10}).fun
    best = minimize_scalar(profiled, method="bounded", bounds=(poi[0], poi[-1]), options={"xatol": 1e-10})
    return max(0.0, 2 * (profiled(mu) - best.fun))


def test_toy_t_through_the_fitting_interface():
    """Toys' t from fit_batch on the set likelihood equals nested 1-D minimisations within
    2e-4 (batched_fit's loose convergence: NLL within 1e-4 of its minimum), also for a maximum
    just inside the prior's bound (the old grid parabola was 0.05 off there). A maximum on the
    prior's bound is a fit (0 failed with the model); without the model every window edge
    fails the toy, counted; progress after 100 toys."""
    x = observed_set(SETS, (6.0, 1.0), seed=4)
    toys = set_toys(SETS, (6.0, 1.0), 3, seed=9)
    poi, nuisance = toy_window(SETS, profile_set(SETS, x, *fit_grids(SETS, 61)), 6.0)
    t, failed = toy_t_values(SETS, toys, 6.0, poi, nuisance, model=SETS)
    assert failed == 0
    assert t == pytest.approx([_nested_t(e, 6.0, poi, nuisance) for e in toys], abs=2e-4)
    toys = set_toys(SETS, (0.5, 1.0), 100, seed=3)
    poi, nuisance = fit_grids(SETS, 31, (0.0, 4.0))
    calls = []
    t, failed = toy_t_values(SETS, toys, 0.5, poi, nuisance, lambda *a: calls.append(a), model=SETS)
    t_free, failed_free = toy_t_values(SETS, toys, 0.5, poi, nuisance)
    assert failed == 0 and calls == [(100, 100)]
    assert 0 < failed_free == np.isnan(t_free).sum()
    for i in (62, int(np.flatnonzero(np.isnan(t_free))[0])):  # mu_hat = 0.074; mu_hat = 0
        assert t[i] == pytest.approx(_nested_t(toys[i], 0.5, poi, nuisance), abs=2e-4)


def test_coverage_summary_on_chi2_samples():
    rng = np.random.default_rng(0)
    t, ref = chi2.rvs(1, size=2000, random_state=rng), chi2.rvs(1, size=2000, random_state=rng)
    out = coverage_summary(t, ref, (0.6827, 0.95))
    for key, cl in (("68", 0.6827), ("95", 0.95)):
        for kind in ("wilks", "neyman"):
            assert abs(out[key][kind]["value"] - cl) < 3 * out[key][kind]["error"] + 0.01
        assert out[key]["within_2_sigma"]["wilks"]


def test_infer_set_profile_with_a_belt():
    x = observed_set(SETS, (6.0, 1.0), seed=4)
    grid = [4.0, 6.0, 8.0]
    toys = [(mu, {"exact": chi2.rvs(1, size=200, random_state=int(mu))}) for mu in grid]
    result = infer_set_profile({"exact": SETS}, SETS, x, 61, (0.6827,), toys)
    low, high = result["exact"]["asymptotic"]["68"]
    n_low, n_high = result["exact"]["neyman"]["68"]
    assert low < result["exact"]["best_fit"]["mu"] < high
    assert abs(n_low - low) < 0.5 and abs(n_high - high) < 0.5  # chi2 critical values: ~ Wilks
    assert result["exact"]["toys_per_point"] == [200, 200, 200]


def test_bad_input():
    with pytest.raises(DataError, match="the set is empty"):
        profile_set(SETS, np.zeros((0, 1)), np.linspace(0, 15, 11), np.linspace(0.5, 1.5, 5))
    with pytest.raises(DataError, match=r"mu = 20 outside the prior's support \[0, 15\]"):
        set_toys(SETS, (20.0, 1.0), 3, seed=0)
