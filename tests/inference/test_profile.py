"""Profile likelihood machinery against the exact model: fits, Wilks intervals, toys."""

import numpy as np
import pytest
from scipy.optimize import minimize

from hsbi.config import load_config
from hsbi.data import Dataset
from hsbi.exceptions import ConfigError, FitError
from hsbi.inference import (
    asymptotic_interval,
    critical_values,
    fit_observed,
    make_likelihood,
    neyman_interval,
    throw_toys,
    toy_statistics,
)
from hsbi.inference.asimov import asimov_dataset
from hsbi.inference.profile import likelihood_from_config, toy_fits
from hsbi.models import GaussianRotation, OnOffMixture

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



def test_toy_fits_agree_with_the_observed_fit():
    """Toys and observed fits share one likelihood and one fitting interface: each toy's t and
    conditional nuisance on an 11-point window equal ``fit_observed``'s (241 points over the
    whole range) to within the Newton tolerance (decrement < 1e-7: t within ~1e-6; the nuisance
    within sqrt(2e-7) sigma_z ~ 1e-5 with sigma_z ~ 0.02)."""
    toys = throw_toys(MODEL, 0.2, np.pi / 4, 1000, 0.1, 6, seed=8)
    fits = toy_fits(MODEL, LIK, toys, 0.3, np.pi / 4, 0.075, MODEL.nuisance_range)
    observed = [fit_observed(MODEL, LIK, toy, MODEL.nuisance_range) for toy in toys]
    assert fits.failed == 0
    np.testing.assert_allclose(fits.t, [fit.t(0.3) for fit in observed], atol=1e-5)
    np.testing.assert_allclose(fits.nuisance_hat_hat, [fit.nuisance_hat_hat(0.3) for fit in observed], atol=1e-5)

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


# --- constraints, bounds and bad input -------------------------------------------------------

ON_OFF = OnOffMixture()


def test_lognormal_constraint_term_and_its_toys():
    """log aux ~ N(log nu, sigma): mean and width of 4,000 thrown log aux within 4 standard errors;
    the NLL term is (log nu - log aux)^2 / (2 sigma^2)."""
    lik = make_likelihood(ON_OFF, 0.05, 0.2, constraint="lognormal")
    assert lik.constraint_nll(np.array([2.0]), 1.0) == pytest.approx(np.log(2.0) ** 2 / (2 * 0.04))
    toys = throw_toys(ON_OFF, 6.0, 1.5, 0.05, 0.2, 4000, seed=3, constraint="lognormal")
    log_aux = np.log([t.aux for t in toys])
    n = len(log_aux)
    assert abs(log_aux.mean() - np.log(1.5)) < 4 * 0.2 / np.sqrt(n)
    assert abs(log_aux.std(ddof=1) - 0.2) < 4 * 0.2 / np.sqrt(2 * (n - 1))


def test_lognormal_fit_agrees_with_a_generic_minimiser():
    lik = make_likelihood(ON_OFF, 1.0, 0.15, constraint="lognormal", nuisance_bounds=(0.5, 2.0))
    data = Dataset(ON_OFF.sample_dataset(np.random.default_rng(4), 6.0, 1.0, 1.0), aux=1.2)

    def nll(params):
        mu, nu = params
        y = ON_OFF.yields(1.0, mu, nu)
        return y.sum() - np.log(np.exp(ON_OFF.log_components(data.x, np.array([nu]))[0]) @ y).sum() \
            + np.log(nu / 1.2) ** 2 / (2 * 0.15**2)

    fit = fit_observed(ON_OFF, lik, data, points=481)
    ref = minimize(nll, x0=[5.0, 1.1], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    assert fit.mu_hat == pytest.approx(ref.x[0], abs=1e-3)
    assert fit.nuisance_hat == pytest.approx(ref.x[1], abs=1e-3)


def test_no_constraint_throws_no_auxiliary_measurement():
    lik = make_likelihood(ON_OFF, 1.0, 0.1, constraint="none")
    assert (lik.constraint, lik.aux_sigma) == ("none", None)
    toys = throw_toys(ON_OFF, 6.0, 1.3, 1.0, None, 3, seed=1)
    assert [t.aux for t in toys] == [1.3, 1.3, 1.3]
    with pytest.raises(ConfigError, match="nuisance constraint 'uniform'"):
        make_likelihood(ON_OFF, 1.0, 0.1, constraint="uniform")


def test_nuisance_bounds_restrict_the_fit():
    lik = make_likelihood(ON_OFF, 1.0, None, nuisance_bounds=(1.1, 2.0))
    data = Dataset(ON_OFF.sample_dataset(np.random.default_rng(5), 6.0, 1.0, 1.0), aux=1.0)
    fit = fit_observed(ON_OFF, lik, data, ON_OFF.nuisance_range)
    assert tuple(fit.lik.model.bounds[1]) == (fit.seed.zs[0], fit.seed.zs[-1]) == (1.1, 2.0)
    assert 1.1 <= fit.nuisance_hat <= 2.0 and 1.1 <= fit.nuisance_hat_hat(4.0) <= 2.0
    with pytest.raises(ConfigError, match="nuisance bounds \\[0.1, 2\\] outside the model's range"):
        make_likelihood(ON_OFF, 1.0, None, nuisance_bounds=(0.1, 2.0))


def test_likelihood_from_the_default_config():
    cfg = load_config()
    lik = likelihood_from_config(cfg.inference, cfg.model.build())
    assert (lik.mu_bounds, lik.constraint, lik.aux_sigma) == ((0.0, 1.0), "gaussian", 0.1)
    assert lik.nuisance_bounds == pytest.approx((0.0, np.pi / 2))


class _Broken:
    """The exact on/off densities with one bad value: a NaN, or no process for one event."""

    processes = ON_OFF.processes

    def __init__(self, event: int, value: float, processes: slice) -> None:
        self.event, self.value, self.slice = event, value, processes

    def log_components(self, x, nuisance):
        out = ON_OFF.log_components(x, nuisance)
        out[:, self.event, self.slice] = self.value
        return out


@pytest.mark.parametrize(
    "broken, match",
    [
        (_Broken(3, np.nan, slice(1, 2)), r"_Broken: the NLL is not finite at mu = 20, nuisance = 0.2: event 3 "
                                          r"\(x = \[.*\]\) has log density nan for process 'background'"),
        (_Broken(5, -np.inf, slice(None)), r"_Broken: the NLL is not finite at the start point mu = 20, "
                                           r"nuisance = 1.6: event 5 \(x = \[.*\]\) has zero intensity"),
    ],
)
def test_non_finite_nll_at_the_start_names_density_point_and_event(broken, match):
    data = Dataset(ON_OFF.sample_dataset(np.random.default_rng(6), 6.0, 1.0, 1.0), aux=1.0)
    with pytest.raises(FitError, match=match):
        fit_observed(broken, make_likelihood(ON_OFF, 1.0, None), data)


def test_a_nan_in_a_toy_names_the_toy():
    toys = throw_toys(ON_OFF, 6.0, 1.0, 1.0, None, 2, seed=7)
    with pytest.raises(FitError, match=r"_Broken \(toy 0\): the NLL is not finite at mu = 20, nuisance = 0.7: "
                                       r"event 3 .* nan for process 'signal'"):
        toy_statistics(_Broken(3, np.nan, slice(0, 1)), make_likelihood(ON_OFF, 1.0, None), toys, 6.0, 1.0, 0.3,
                       points=7)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: throw_toys(ON_OFF, 50.0, 1.0, 1.0, None, 2, seed=1),
         r"toys requested at mu = 50, outside the model's range \[0, 40\] of the signal strength"),
        (lambda: throw_toys(ON_OFF, 6.0, 5.0, 1.0, None, 2, seed=1),
         r"toys requested at nuisance = 5, outside the model's range \[0.2, 3\] of the background"),
        (lambda: asimov_dataset(ON_OFF, -1.0, 1.0, 1.0), r"Asimov dataset requested at mu = -1, outside"),
        (lambda: toy_statistics(ON_OFF, make_likelihood(ON_OFF, 1.0, None, (0.0, 10.0)), [], 12.0, 1.0, 0.3),
         r"toys tested at mu = 12, outside the bounds \[0, 10\]"),
        (lambda: toy_statistics(ON_OFF, make_likelihood(ON_OFF, 1.0, None), [], 6.0, 3.5, 0.3),
         r"toys tested at nuisance = 3.5, outside the bounds \[0.2, 3\]"),
    ],
    ids=["mu-outside-model", "nuisance-outside-model", "asimov", "mu-outside-bounds", "center-outside-bounds"],
)
def test_toys_outside_the_bounds_are_refused(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_a_refit_stuck_on_an_inner_edge_is_not_accepted():
    """On/off toys at nu = 1 fitted on a window centred at nu = 0.4: the 3x wider refit window
    [0.2, 0.7] touches the lower bound but the minimum lies beyond its inner (upper) edge. Such a
    toy must not pass with the window's t: it is refitted over the whole bounds and then agrees
    with the full-range profile (grid of 481 points; the 241-point refit is good to ~1e-3 in t)."""
    lik = make_likelihood(ON_OFF, 1.0, None)
    toys = throw_toys(ON_OFF, 6.0, 1.0, 1.0, None, 20, seed=4)
    t, failed = toy_statistics(ON_OFF, lik, toys, 6.0, 0.4, 0.1, points=7)
    reference = np.array([fit_observed(ON_OFF, lik, toy, points=481).t(6.0) for toy in toys])
    assert failed == 0
    np.testing.assert_allclose(t, reference, atol=1e-2)
