"""Profile likelihood machinery against the exact model: fits, Wilks intervals, toys."""

import numpy as np
import pytest
from scipy.optimize import minimize

from hsbi.data import Dataset
from hsbi.exceptions import FitError
from hsbi.inference import (
    asymptotic_interval,
    critical_values,
    fit_observed,
    make_likelihood,
    neyman_interval,
    throw_toys,
    toy_statistics,
)
from hsbi.models import GaussianRotation

MODEL = GaussianRotation(radius=2.0)
LIK = make_likelihood(MODEL, 1000, aux_sigma=0.1)


def _nll(params, data):
    mu, z = params
    return -MODEL.log_prob(data.x, mu, z, 1000).sum() + (z - data.aux) ** 2 / (2 * 0.1**2)


def test_global_fit_agrees_with_a_generic_minimiser():
    rng = np.random.default_rng(1)
    data = Dataset(MODEL.sample_dataset(rng, 0.2, 0.8, 1000), aux=0.75)
    fit = fit_observed(MODEL, LIK, data, MODEL.nuisance_range)
    ref = minimize(_nll, x0=[0.5, 0.7], args=(data,), method="Nelder-Mead",
                   options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 5000})
    assert fit.mu_hat == pytest.approx(ref.x[0], abs=1e-4)
    assert fit.nuisance_hat == pytest.approx(ref.x[1], abs=1e-4)


def test_wilks_interval_matches_curvature_width():
    """The 68.3% interval half-width equals 1/sqrt(d2 NLL_profile / d mu2) to a few percent."""
    rng = np.random.default_rng(2)
    data = Dataset(MODEL.sample_dataset(rng, 0.2, np.pi / 4, 1000), aux=np.pi / 4)
    fit = fit_observed(MODEL, LIK, data, MODEL.nuisance_range)
    iv = asymptotic_interval(fit, 0.6827)
    h = 1e-3
    curv = (fit.t(fit.mu_hat + h) + fit.t(fit.mu_hat - h)) / (2 * h**2)  # t(mu_hat + h) = h^2 / sigma^2
    sigma = 1.0 / np.sqrt(curv)
    assert (iv.high - iv.low) / 2 == pytest.approx(sigma, rel=0.05)
    assert iv.contains(fit.mu_hat)


def test_toy_test_statistic_follows_chi2_1():
    """1,000 toys: P(t < 1) and P(t < 3.84) within 3 binomial standard errors of 68.27%, 95%."""
    toys = throw_toys(MODEL, 0.2, np.pi / 4, 1000, 0.1, 1000, seed=5)
    t, failed = toy_statistics(MODEL, LIK, toys, 0.2, np.pi / 4, 0.075, MODEL.nuisance_range)
    assert failed == 0
    n = len(t)
    for q, p in ((1.0, 0.6827), (3.841, 0.95)):
        se = np.sqrt(p * (1 - p) / n)
        assert abs(np.mean(t < q) - p) < 3 * se


def test_critical_values_and_neyman_inversion():
    t = np.random.default_rng(0).chisquare(1, size=20_000)
    crit = critical_values(t, [0.6827, 0.95])
    assert crit["0.6827"]["value"] == pytest.approx(1.0, abs=0.05)
    assert crit["0.95"]["low"] <= crit["0.95"]["value"] <= crit["0.95"]["high"]
    grid = np.linspace(0, 1, 11)
    iv = neyman_interval(grid, np.full(11, 1.0), lambda mu: ((mu - 0.5) / 0.1) ** 2, 0.6827)
    assert (iv.low, iv.high) == (pytest.approx(0.4, abs=1e-6), pytest.approx(0.6, abs=1e-6))
    with pytest.raises(FitError, match="widen inference.neyman"):
        neyman_interval(grid, np.full(11, 1.0), lambda mu: 100.0, 0.6827)
