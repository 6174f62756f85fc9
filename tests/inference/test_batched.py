"""Batched Newton fits of many toys agree with the grid profile and with iminuit."""

import numpy as np
import pytest

from hsbi.data import Dataset
from hsbi.inference import fit_observed, make_likelihood, throw_toys, toy_statistics
from hsbi.inference.batched import batched_t, prepare_toys
from hsbi.inference.minuit import minuit_fit
from hsbi.models import GaussianRotation, OnOffMixture


def test_batched_t_matches_the_grid_profile_on_the_rotation_model():
    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1)
    toys = throw_toys(model, 0.2, np.pi / 4, 1000, 0.1, 200, seed=5)
    t_grid, failed = toy_statistics(model, lik, toys, 0.2, np.pi / 4, 0.045, model.nuisance_range, points=7)
    t_batch, edge = batched_t(prepare_toys(model, lik, toys, np.pi / 4, 0.075, model.nuisance_range), 0.2)
    assert failed == 0 and not edge.any()
    assert np.max(np.abs(t_batch - t_grid)) < 1e-3


def test_batched_fit_agrees_with_minos_on_on_off_toys():
    """On each toy, t at the MINOS edge of the 68.3% interval is 1 (the definition of MINOS)."""
    model = OnOffMixture()
    lik = make_likelihood(model, 1.0, None)
    toys = [Dataset(t.x, aux=1.0) for t in throw_toys(model, 6.0, 1.0, 1.0, 1.0, 5, seed=9)]
    for toy in toys:
        mf = minuit_fit(model, lik, toy, model.nuisance_range, start=(6.0, 1.0))
        prepared = prepare_toys(model, lik, [toy, toy], 1.0, 0.8, model.nuisance_range, degree=2)
        for edge_value in (mf.interval.low, mf.interval.high):
            (t_low, t_low2), edge = batched_t(prepared, edge_value, mu_start=mf.mu_hat)
            assert not edge.any()
            assert t_low == pytest.approx(1.0, abs=2e-3)
            assert t_low2 == t_low


def test_observed_and_batched_agree_on_t_curve():
    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1)
    toy = throw_toys(model, 0.25, 0.9, 1000, 0.1, 1, seed=2)[0]
    fit = fit_observed(model, lik, toy, model.nuisance_range)
    prepared = prepare_toys(model, lik, [toy], fit.nuisance_hat, 0.1, model.nuisance_range)
    for mu in (0.22, 0.25, 0.28):
        (t,), _ = batched_t(prepared, mu, mu_start=fit.mu_hat)
        assert t == pytest.approx(fit.t(mu), abs=2e-3)


def test_pooled_toys_reproduce_the_simulator_critical_values():
    """400 pooled toys and 400 simulator toys at the same point: both give P(t < 1) and
    P(t < 3.84) within 3 binomial standard errors of 68.3% and 95% (t follows chi2(1) here)."""
    from hsbi.inference.batched import pool_toys

    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1)
    pooled = pool_toys(model, lik, model, 0.2, np.pi / 4, 1000, 400, seed=4, half_width=0.075)
    t_pool, edge = batched_t(pooled, 0.2)
    sim = throw_toys(model, 0.2, np.pi / 4, 1000, 0.1, 400, seed=5)
    t_sim, _ = toy_statistics(model, lik, sim, 0.2, np.pi / 4, 0.045, model.nuisance_range, points=7)
    assert not edge.any()
    for level, nominal in ((0.6827, 1.0), (0.95, 3.84)):
        p, s_ = np.mean(t_pool < nominal), np.mean(t_sim < nominal)
        se = np.sqrt(level * (1 - level) / 400)
        assert abs(p - level) < 3 * se and abs(s_ - level) < 3 * se


def _exact_two_nuisance_minuit(model, x, aux, sigma, n_expected, mu_fixed=None):
    """MIGRAD (and MINOS in mu) on the exact extended NLL in (mu, angle, width): no surrogates."""
    from iminuit import Minuit

    def nll(mu, z, s):
        nu = np.array([[z, s]])
        a, b = model.yield_coefficients(n_expected, nu)
        y = a[0] + mu * b[0]
        lam = np.exp(model.log_components(x, nu)[0]) @ y
        return float(y.sum() - np.log(lam).sum() + ((np.array([z, s]) - aux) ** 2).sum() / (2 * sigma**2))

    m = Minuit(nll, mu=0.2 if mu_fixed is None else mu_fixed, z=np.pi / 4, s=1.0)
    m.errordef = Minuit.LIKELIHOOD
    m.limits["mu"] = model.poi_range
    m.strategy, m.tol = 2, 1e-4  # EDM < 2e-7: parameters to ~1e-3 sigma
    if mu_fixed is not None:
        m.fixed["mu"] = True
    m.migrad()
    assert m.valid
    if mu_fixed is None:
        m.minos("mu")
    return m


def test_two_nuisance_batched_fits_agree_with_minuit_on_the_exact_likelihood():
    """Three toys of the rotation-width model (1 POI + 2 constrained nuisances): the batched
    surrogate fits against MIGRAD/MINOS on the exact NLL. An estimate within eps = 1e-2 of its
    error sigma is required of mu_hat, both nuisances and both 68.3% edges; for t at
    mu_hat +- sigma, the change such an error makes there, 2 eps sqrt(t)."""
    from hsbi.inference.batched_nd import Basis, Window, fit, intervals, prepare, profile_fits
    from hsbi.models.constraint import Constraint
    from hsbi.models.rotation_width import RotationWidth

    model, sigma, eps, truth = RotationWidth(), 0.1, 1e-2, np.array([np.pi / 4, 1.0])
    rng = np.random.default_rng(11)
    xs = [model.sample_dataset(rng, 0.2, truth, 1000) for _ in range(3)]
    aux = truth + sigma * rng.standard_normal((3, 2))
    # windows of ~5 posterior sigma (0.016 rad, 0.018) around the truth
    toys = prepare(model.log_components, xs, [None] * 3, aux,
                   lambda nu: model.yield_coefficients(1000, nu), Window.clipped(truth, [0.08, 0.09], model.nuisance_ranges),
                   Basis.total_degree(2, 4), model.poi_range, [Constraint("gaussian", sigma)] * 2)
    glob = fit(toys, 0.2)
    low, high, ok = intervals(toys, glob)
    assert ok.all()
    for b, x in enumerate(xs):
        m = _exact_two_nuisance_minuit(model, x, aux[b], sigma, 1000)
        errors = np.array(m.errors)
        assert abs(glob.mu[b] - m.values["mu"]) < eps * errors[0]
        assert np.all(np.abs(glob.nuisance[b] - np.array(m.values[1:])) < eps * errors[1:])
        err = m.merrors["mu"]
        assert abs(low[b] - (m.values["mu"] + err.lower)) < eps * errors[0]
        assert abs(high[b] - (m.values["mu"] + err.upper)) < eps * errors[0]
        for mu in (m.values["mu"] - errors[0], m.values["mu"] + errors[0]):
            cond = _exact_two_nuisance_minuit(model, x, aux[b], sigma, 1000, mu_fixed=mu)
            t_exact = 2 * (cond.fval - m.fval)
            c_fit, g_fit = profile_fits(toys.subset(slice(b, b + 1)), mu, mu_start=m.values["mu"])
            t_batched = 2 * (c_fit.nll[0] - g_fit.nll[0])
            assert abs(t_batched - t_exact) < 2 * eps * np.sqrt(t_exact)


# --- nuisance bounds, physical bounds and failed fits (issue 17) ------------------------------

BOUNDED = (0.70, 0.80)  # inside the rotation model's [0, pi/2]


def test_pooled_toys_profile_within_the_nuisance_bounds():
    """Pooled toys at z = pi/4 with the nuisance bounded to [0.70, 0.80] and a window of
    pi/4 +- 0.08: every conditional and global fit keeps the nuisance inside the bounds (the
    observed t(mu) is profiled there; toys profiled over a wider range test another statistic)."""
    from hsbi.inference.batched import pool_toys
    from hsbi.inference.batched_nd import profile_fits

    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1, nuisance_bounds=BOUNDED)
    toys = pool_toys(model, lik, model, 0.2, np.pi / 4, 1000, 64, seed=1, half_width=0.08)
    cond, glob = profile_fits(toys, 0.2)
    z = np.r_[cond.nuisance[:, 0], glob.nuisance[:, 0]]
    assert z.min() >= BOUNDED[0] - 1e-12 and z.max() <= BOUNDED[1] + 1e-12, (z.min(), z.max())


def test_fits_at_a_physical_bound_are_not_failures():
    """Toys thrown at the nuisance bound z = 0.80: about half of the fits end on it. The window
    is clipped there, and a fit on that edge is the constrained fit, not a failure: no toy is
    flagged, t agrees with the grid profile within the same bounds (1e-3, as on an open window)
    and the 68.3% edges with the grid profile's Wilks interval (1e-3 of the width)."""
    from hsbi.inference import asymptotic_interval
    from hsbi.inference.batched_nd import fit, intervals

    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1, nuisance_bounds=BOUNDED)
    toys = throw_toys(model, 0.2, BOUNDED[1], 1000, 0.1, 60, seed=8)
    t_grid, failed = toy_statistics(model, lik, toys, 0.2, BOUNDED[1], 0.045, points=7)
    prepared = prepare_toys(model, lik, toys, BOUNDED[1], 0.075, model.nuisance_range)
    t_batch, flagged = batched_t(prepared, 0.2)
    glob = fit(prepared, 0.2)
    assert np.sum(glob.nuisance[:, 0] >= BOUNDED[1] - 1e-9) >= 15  # many fits on the bound
    assert failed == 0 and not flagged.any()
    assert np.max(np.abs(t_batch - t_grid)) < 1e-3
    low, high, ok = intervals(prepared, glob, q=1.0)
    assert ok.all()
    for b in range(5):
        iv = asymptotic_interval(fit_observed(model, lik, toys[b]), 0.6827)
        width = iv.high - iv.low
        assert abs(low[b] - iv.low) < 1e-3 * width and abs(high[b] - iv.high) < 1e-3 * width


def test_a_fit_stopped_by_its_iteration_limit_is_flagged():
    """One Newton iteration from far away does not converge: the fit says so (``converged``),
    and ``batched_t`` flags the toy; the default limit converges every toy."""
    from hsbi.inference.batched_nd import fit

    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1)
    prepared = prepare_toys(model, lik, throw_toys(model, 0.2, np.pi / 4, 1000, 0.1, 8, seed=3),
                            np.pi / 4, 0.075, model.nuisance_range)
    assert not fit(prepared, 0.9, iterations=1).converged.any()
    assert fit(prepared, 0.9).converged.all()


def test_interval_edges_with_the_nuisance_on_the_window_edge_are_not_ok():
    """On/off toys on a window narrower than the nuisance's swing along the profile: an edge
    is accepted only where its nuisance stays off the window's (non-physical) edges, and then
    agrees with the edge found on a wide window."""
    from hsbi.inference.batched_nd import fit, intervals

    model = OnOffMixture()
    lik = make_likelihood(model, 1.0, None)
    toys = [Dataset(t.x, aux=1.0) for t in throw_toys(model, 6.0, 1.0, 1.0, 1.0, 40, seed=9)]
    wide = prepare_toys(model, lik, toys, 1.0, 0.8, model.nuisance_range)
    w_low, w_high, w_ok = intervals(wide, fit(wide, 6.0), q=3.84)
    narrow = prepare_toys(model, lik, toys, 1.05, 0.05, model.nuisance_range)
    low, high, ok = intervals(narrow, fit(narrow, 6.0), q=3.84)
    assert w_ok.all() and 0 < ok.sum() < len(toys)
    assert np.max(np.abs(np.r_[low - w_low, high - w_high][np.r_[ok, ok]])) < 1e-3


def test_toy_chunks_on_threads_give_the_same_fits(monkeypatch):
    """Chunks of pooled toys fitted on two threads (``HSBI_TOY_THREADS``) give bit for bit the
    fits of one thread, in the toys' order: a chunk's fit does not depend on its neighbours."""
    from hsbi.inference.batched import pool_toys
    from hsbi.inference.batched_nd import intervals, profile_fits

    model = GaussianRotation()
    lik = make_likelihood(model, 1000, 0.1)
    toys = pool_toys(model, lik, model, 0.2, np.pi / 4, 1000, 100, seed=3, half_width=0.08)
    runs = []
    for threads in ("1", "2"):
        monkeypatch.setenv("HSBI_TOY_THREADS", threads)
        cond, glob = profile_fits(toys, 0.2)
        runs.append((cond.nll, glob.nll, glob.mu, *intervals(toys, glob)))
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)


def test_a_bad_toy_thread_count_is_a_config_error(monkeypatch):
    from hsbi.exceptions import ConfigError
    from hsbi.inference.batched_nd import toy_threads

    monkeypatch.setenv("HSBI_TOY_THREADS", "two")
    with pytest.raises(ConfigError, match="HSBI_TOY_THREADS: expected a positive integer, got 'two'"):
        toy_threads()
    monkeypatch.setenv("HSBI_TOY_THREADS", "3")
    assert toy_threads() == 3
