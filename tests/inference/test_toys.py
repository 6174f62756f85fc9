"""Toys, batched t(mu) and the Neyman belt of the declared model, on the exact many-NP benchmark
(exact per-event terms in hsbi's likelihood: no networks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hsbi.inference.fitting import DeclaredLikelihood, fit, minos_intervals
from hsbi.inference.statmodel import DTYPE, ChannelEvents, Dataset, Normalisation
from hsbi.inference.toys import (
    PoolChannel,
    ToyPool,
    concat,
    coverage,
    critical_value,
    draw_events,
    neyman_belt,
    t_statistic,
    toy_t,
    wilks_intervals,
)
from hsbi.models.many_np import ManyNP
from tests.inference.many_np_exact import exact_model

SIM = ManyNP()
TRUTH = {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7}
N_POOL = 3000  # pool and normalisation events per process


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The exact likelihood, a pool of nominal events per process and the exact terms maker."""
    torch.set_num_threads(1)
    model, terms, _ = exact_model(SIM, tmp_path_factory.mktemp("mnp"), 20, TRUTH)
    ch = model.channels[0]
    rng = np.random.default_rng(5)
    xs = [SIM.sample(rng, p, N_POOL) for p in ch.processes]
    t = [terms(x) for x in xs]
    w = [np.ones(N_POOL)] * len(xs)
    los, his = [a[1][:, c] for c, a in enumerate(t)], [a[2][:, c] for c, a in enumerate(t)]
    off_lo, off_hi = Normalisation.offsets(w, los, his)
    norm = Normalisation.of(w, [a - o for a, o in zip(los, off_lo)], [a - o for a, o in zip(his, off_hi)])
    lik = DeclaredLikelihood(model, (norm,))
    pool = ToyPool((PoolChannel.of(w, *(np.concatenate(parts) for parts in zip(*t))),))
    return lik, pool, terms


def test_toys_carry_the_model_yields_and_drawn_global_observables(setup: tuple) -> None:
    lik, pool, _ = setup
    model = lik.model
    truth = model.point(TRUTH)
    toys = pool.throw(lik, np.tile(truth, (200, 1)), np.random.default_rng(1))
    counts = toys.channels[0].w.sum(1).numpy()
    nu = sum(SIM.yields(TRUTH).values())  # the model's yields equal the benchmark's (symmetric kappas)
    assert abs(counts.mean() - nu) < 4 * math.sqrt(nu / 200)
    assert abs(counts.var() / nu - 1) < 4 * math.sqrt(2 / 199)  # Poisson
    aux = toys.aux.numpy()
    for name in ("shape_0", "norm_1", "shape_3"):
        a = aux[:, model.index(name)]
        assert abs(a.mean() - truth[model.index(name)]) < 4 / math.sqrt(200) and abs(a.std() - 1) < 4 * math.sqrt(0.5 / 200)
    assert np.isnan(aux[:, model.poi_index]).all()  # the POI has no global observable


def test_pool_reweighting_moves_the_shape(setup: tuple) -> None:
    """bkg2's events in toys at shape_4 = +1 follow the varied density. Their mean exact log ratio
    log p(x | +1) / p(x) is +KL = (delta / sigma)^2 / 2 = +0.02 there and -KL at the nominal point;
    the draws reproduce the pool's reweighted mean within 4 of their standard errors (the log
    ratio's spread is delta / sigma = 0.2), the pool's mean is +-KL within 4 of its own."""
    lik, pool, _ = setup
    model, ch = lik.model, lik.model.channels[0]
    s, c = list(ch.shape_index).index(model.index("shape_4")), ch.processes.index("bkg2")
    channel = pool.channels[0]
    r = channel.events.hi[0, :, c, s].numpy()
    mine = channel.process == c
    kl = 0.5 * 0.20**2
    for value, sign in ((0.0, -1), (1.0, 1)):
        theta = torch.as_tensor(np.tile(model.point({"shape_4": value}), (60, 1)), dtype=DTYPE)
        idx, w = draw_events(ch, channel, theta, np.random.default_rng(2))
        drawn = idx[(w > 0) & mine[idx]]
        p = np.exp(value * r[mine])
        pool_mean = float(np.sum(p * r[mine]) / p.sum())
        assert abs(r[drawn].mean() - pool_mean) < 4 * 0.2 / math.sqrt(len(drawn))
        assert abs(pool_mean - sign * kl) < 4 * 0.2 / math.sqrt(mine.sum())


def test_toys_gather_the_kernels_layout_from_the_pool(setup: tuple) -> None:
    """The fused kernels' per-process layout of thrown toys, gathered from the pool's, equals the
    one compacted from the toys' dense terms."""
    from hsbi.inference.kernels import compact_events

    lik, pool, _ = setup
    toys = pool.throw(lik, np.tile(lik.model.point(TRUTH), (3, 1)), np.random.default_rng(2))
    ev, (own, counts) = toys.channels[0], lik.model.channels[0].own_shapes
    got = ev.kernel_arrays(own, counts)
    ref = compact_events(*(np.ascontiguousarray(t.numpy()) for t in (ev.logp, ev.lo, ev.hi, ev.coef)), own, counts)
    np.testing.assert_array_equal(got[0], ev.w.numpy())
    np.testing.assert_array_equal(got[1], ref[0])
    for a, b in zip(got[2:], ref[1:]):  # entries past a process's own NPs are never read
        for c, k in enumerate(counts):
            np.testing.assert_array_equal(a[:, c, :k], b[:, c, :k])


def test_pool_factors_equal_the_tensor_expressions(setup: tuple) -> None:
    """The pool's shape factors per toy (the fused kernel over each event's own NPs) equal the
    code-4 tensor expressions over the dense terms, on both sides of |alpha| = 1."""
    from hsbi.inference.kernels import pool_log_factors
    from hsbi.inference.statmodel import code4_shared_terms
    from hsbi.models.interpolation import code4_coefficients

    lik, pool, _ = setup
    ch, pc = lik.model.channels[0], pool.channels[0]
    theta = np.tile(lik.model.point(TRUTH), (4, 1))
    theta[:, ch.shape_index] += np.random.default_rng(6).normal(0, 1.3, (4, len(ch.shape_index)))
    t = torch.as_tensor(theta, dtype=DTYPE)
    rows = np.arange(len(pc.process))  # each event's own process's log ratios (N, S)
    own_lo, own_hi = pc.events.lo[0][rows, pc.process], pc.events.hi[0][rows, pc.process]
    own_coef = torch.as_tensor(code4_coefficients(own_lo.numpy(), own_hi.numpy()), dtype=DTYPE)
    (L,) = code4_shared_terms(t[:, ch.shape_index], own_lo[None], own_hi[None], own_coef[None], derivatives=False)
    own, counts = ch.own_shapes
    starts = np.searchsorted(pc.process, np.arange(len(ch.processes) + 1))
    got = pool_log_factors(theta[:, ch.shape_index], starts, own, counts, *pc.events.kernel_arrays(own, counts)[2:])
    np.testing.assert_allclose(got, L[:, 0].sum(-1).numpy(), rtol=0, atol=1e-12)


def test_batched_t_equals_minuit_fits(setup: tuple) -> None:
    lik, pool, _ = setup
    truth = lik.model.point(TRUTH)
    toys = pool.throw(lik, np.tile(truth, (6, 1)), np.random.default_rng(3))
    res = t_statistic(lik, toys, 1.3, np.tile(truth, (6, 1)))
    assert not res.failed.any()
    for b in (0, 1):
        one = toys.take(torch.tensor([b]))
        glob, cond = fit(lik, one, hesse=False), fit(lik, one, {"mu": 1.3}, hesse=False)
        assert abs(res.t[b] - 2 * (cond.nll - glob.nll)) < 2e-4
        np.testing.assert_allclose(res.theta_hat[b], glob.values, atol=3e-3)


def test_batched_wilks_intervals_equal_minos(setup: tuple) -> None:
    """The batched Wilks intervals of 4 toys (one at mu = 0, where the low edge is the bound)
    equal MINOS's on each toy alone: edges within 2e-3 of the 68.3% width (t within 1e-3 of
    the threshold, where dt/dmu ~ 2 sqrt(q) / sigma)."""
    lik, pool, _ = setup
    model = lik.model
    thrown = np.tile(model.point(TRUTH), (4, 1))
    thrown[3, model.poi_index] = 0.0
    toys = pool.throw(lik, thrown, np.random.default_rng(8))
    edges = wilks_intervals(lik, toys, 0.6827, thrown)
    assert np.isfinite(edges).all()
    for b in range(4):
        lo, hi, valid = minos_intervals(lik, toys.take(torch.tensor([b])), (0.6827,))[0.6827]
        assert valid or lo == model.parameters[model.poi_index].bounds[0]
        np.testing.assert_allclose(edges[b], (lo, hi), atol=2e-3 * (hi - lo))


def test_toy_t_follows_wilks_at_the_truth(setup: tuple) -> None:
    """With ~1,000 events per toy t(mu_true) is close to chi2_1: the 68.27% and 95% quantiles
    of 200 toys within 3 binomial standard errors, and no failed fit."""
    lik, pool, _ = setup
    res = toy_t(lik, pool, lik.model.point(TRUTH), 200, seed=4)
    assert not res.failed.any()
    for level in (0.6827, 0.95):
        frac = np.mean(res.t <= stats.chi2.ppf(level, 1))
        assert abs(frac - level) < 3 * math.sqrt(level * (1 - level) / 200)


def test_coverage_counts_failed_fits_against_the_point() -> None:
    t_ref = np.r_[np.linspace(0, 4, 99), np.inf]
    assert critical_value(t_ref, 0.99) == 4.0 and critical_value(t_ref, 1.0) == np.inf
    cov = coverage(np.array([0.5, 5.0, np.inf]), t_ref, 0.5)
    assert cov["coverage"] == pytest.approx(1 / 3) and cov["failed_datasets"] == 1 and cov["failed_reference"] == 1
    assert cov["error"] == pytest.approx(math.sqrt(0.25 * (1 / 3 + 1 / 100)))


def test_neyman_belt_of_a_dataset(setup: tuple) -> None:
    """The profile construction on a coarse grid: the observed MLE's point is accepted, the
    far ends rejected at 68%; toys fitted without failures."""
    lik, pool, terms = setup
    x, aux = SIM.sample_toy(np.random.default_rng(7), TRUTH)
    a = lik.model.nominal_aux.copy()
    for k, v in aux.items():
        a[lik.model.index(k)] = v
    logp, lo, hi = terms(x)
    data = concat([Dataset((ChannelEvents.of(np.ones((1, len(x))), logp[None], lo[None], hi[None]),),
                           torch.as_tensor(a[None], dtype=DTYPE))])
    best = fit(lik, data)
    mu_hat, err = best["mu"], best.error("mu")
    grid = [mu_hat - 3 * err, mu_hat, mu_hat + 3 * err]
    belt = neyman_belt(lik, pool, data, grid, toys=40, levels=(0.6827,), seed=8)
    assert belt.t_observed[1] < 1e-6 and belt.failed.sum() == 0
    assert belt.t_observed[0] > belt.critical[0.6827][0] and belt.t_observed[2] > belt.critical[0.6827][2]
    lo, hi, truncated = belt.interval(0.6827)
    assert grid[0] < lo < grid[1] < hi < grid[2] and not truncated
