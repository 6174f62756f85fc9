"""The hierarchical set models: simulation, exact set likelihoods and posteriors, bad input."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from hsbi.data import Dataset
from hsbi.exceptions import DataError
from hsbi.inference import make_likelihood
from hsbi.models import OnOffMixture
from hsbi.models.bump_hunt import BumpHunt, OnOffSets, build_set_model


def test_bump_hunt_simulation_matches_the_generative_model():
    model = BumpHunt()
    rng = np.random.default_rng(0)
    theta = np.array([[0.3, 4.0]] * 200)
    events, lengths = model.simulate(rng, theta)
    assert events.shape == (200 * 100, 1) and (lengths == 100).all()
    signal = np.abs(events[:, 0] - 4.0) < 0.5  # background N(0, 1) beyond 3.5 sigma: < 3e-4
    n = len(events)
    assert abs(signal.mean() - 0.3) < 3 * math.sqrt(0.3 * 0.7 / n) + 3e-4
    assert abs(events[signal, 0].std() - 0.1) < 5 * 0.1 / math.sqrt(2 * signal.sum())
    prior = model.sample_prior(rng, 20000)
    assert abs(prior[:, 0].mean() - 0.5) < 5 * math.sqrt(1 / 12 / 20000)
    assert abs(prior[:, 1].std() - 2.0) < 5 * 2.0 / math.sqrt(2 * 20000)
    _, sizes = model.simulate(rng, theta[:3], np.array([10, 20, 5]))
    assert sizes.tolist() == [10, 20, 5]


def test_bump_hunt_exact_posterior_against_brute_force():
    """The adaptive m integration against a dense uniform grid over the whole prior."""
    model = BumpHunt()
    rng = np.random.default_rng(3)
    f = np.linspace(0.01, 0.99, 50)
    for theta in ([0.3, 1.5], [0.05, 0.2]):
        x, _ = model.simulate(rng, np.array([theta]), np.array([40]))
        m = np.arange(-11.0, 13.0, 0.005)  # +- 6 prior sigma; steps << the peak width 0.1 / sqrt(12)
        ll = np.array([model.log_likelihood(x, np.c_[np.full_like(m, fi), m]) for fi in f])
        ref = logsumexp(ll - 0.5 * ((m - 1.0) / 2.0) ** 2, axis=1)
        ref = np.exp(ref - ref.max())
        ref /= np.trapezoid(ref, f)
        np.testing.assert_allclose(model.exact_posterior(x, f), ref, atol=1e-5 * ref.max())


def test_hierarchy_narrows_the_posterior():
    """With the bump position shared by the set, the posterior of f is narrower than the
    product of per-event posteriors (each event its own m), on the same sets."""
    model = BumpHunt()
    rng = np.random.default_rng(1)
    f = np.linspace(0.0025, 0.9975, 200)
    for theta in ([0.3, 3.0], [0.5, -2.0]):
        x, _ = model.simulate(rng, np.array([theta]))
        std = {}
        for name in ("exact_posterior", "per_event_posterior"):
            p = getattr(model, name)(x, f)
            mean = np.trapezoid(f * p, f)
            std[name] = math.sqrt(np.trapezoid((f - mean) ** 2 * p, f))
        assert std["exact_posterior"] < 0.6 * std["per_event_posterior"]


def test_on_off_set_likelihood_is_the_extended_likelihood():
    """OnOffSets.log_likelihood equals minus the project's extended NLL (OnOffMixture, free nu)
    up to a constant."""
    sets = OnOffSets()
    x, n = sets.simulate(np.random.default_rng(2), np.array([[6.0, 1.0]]))
    model = OnOffMixture()
    lik = make_likelihood(model, 1.0, None)
    nus = np.linspace(0.7, 1.3, 7)
    grid = lik.grid(model.log_components(x, nus), nus, aux=1.0)
    for mu in (3.0, 6.0, 9.0):
        mine = sets.log_likelihood(x, np.c_[np.full_like(nus, mu), nus])
        diff = mine + grid.nll(mu)
        np.testing.assert_allclose(diff, diff[0], atol=1e-8)
    assert Dataset(x=x, aux=1.0).x.shape == (n[0], 1)


def test_bad_parameters_and_registry():
    with pytest.raises(DataError, match=r"f = 1\.2 outside the prior's support \[0, 1\]"):
        BumpHunt().simulate(np.random.default_rng(0), np.array([[1.2, 0.0]]))
    with pytest.raises(DataError, match=r"nu = 2 outside the prior's support \[0\.5, 1\.5\]"):
        OnOffSets().check_theta(np.array([[5.0, 2.0]]))
    with pytest.raises(DataError, match="the set is empty"):
        BumpHunt().exact_posterior(np.zeros((0, 1)), np.array([0.5]))
    with pytest.raises(ValueError, match="poi_prior"):
        OnOffSets(poi_prior=(-1.0, 3.0))
    with pytest.raises(KeyError, match="unknown set model"):
        build_set_model("nope")
    assert build_set_model("bump_hunt", size=10).size == 10
