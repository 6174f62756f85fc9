"""Neyman toys per (point, chunk), the confidence belt built from chunks, and its inversion."""

import numpy as np
import pytest
from scipy.stats import chi2

from hsbi.config import load_config
from hsbi.data import Dataset, simulate_observed
from hsbi.exceptions import DataError, FitError
from hsbi.inference import critical_values, make_likelihood, throw_toys, toy_statistics
from hsbi.inference.analysis import (
    POOL_WINDOW_SIGMAS,
    TOY_WINDOW_POINTS,
    TOY_WINDOW_SIGMAS,
    confidence_belt,
    infer,
    neyman_toys,
    observed_fits,
    toy_files,
    toy_seed,
)
from hsbi.inference.batched import batched_t, pool_toys

QUIET = {"progress": lambda _: None}


def setup(*overrides: str):
    cfg = load_config("default", ["inference.neyman.mu_min=0.1", "inference.neyman.mu_max=0.3",
                                  "inference.neyman.points=5", *overrides])
    model = cfg.model.build()
    densities = {"exact": model}
    fits = observed_fits(cfg, densities, model, simulate_observed(model, cfg))
    return cfg, model, densities, fits


def test_a_chunk_depends_on_seed_mu_and_chunk_index_only():
    cfg, model, densities, fits = setup()
    wide = setup("inference.neyman.mu_min=0.0", "inference.neyman.points=11")[0]
    a = neyman_toys(cfg, densities, model, fits, 0.2, 1, 12, **QUIET)["exact"]
    b = neyman_toys(wide, densities, model, fits, 0.2, 1, 12, **QUIET)["exact"]
    c = neyman_toys(cfg, densities, model, fits, 0.2, 0, 12, **QUIET)["exact"]
    assert a.seed == b.seed == toy_seed(cfg.inference.neyman.seed, 0.2, 1) != c.seed
    assert np.array_equal(a.t, b.t) and not np.array_equal(a.t, c.t)


def test_simulator_chunk_stores_the_datasets_that_give_its_t():
    cfg, model, densities, fits = setup()
    inf = cfg.inference
    chunk = neyman_toys(cfg, densities, model, fits, 0.15, 2, 8, **QUIET)["exact"]
    d = chunk.datasets
    assert d["x"].dtype == np.float32 and d["n_events"].sum() == len(d["x"]) and len(d["aux"]) == 8
    again = throw_toys(model, 0.15, chunk.nuisance_generated, inf.n_expected, inf.constraint_sigma, 8, chunk.seed)
    assert np.array_equal(np.concatenate([t.x for t in again]).astype(np.float32), d["x"])
    stored = np.split(d["x"].astype(float), np.cumsum(d["n_events"])[:-1])
    toys = [Dataset(x=x, aux=float(a)) for x, a in zip(stored, d["aux"])]
    lik = make_likelihood(model, inf.n_expected, inf.constraint_sigma)
    t, failed = toy_statistics(model, lik, toys, 0.15, chunk.nuisance_generated,
                               TOY_WINDOW_SIGMAS * fits["exact"].sigma_nuisance, model.nuisance_range,
                               points=TOY_WINDOW_POINTS)
    assert failed == chunk.failed == 0
    np.testing.assert_allclose(t, chunk.t, atol=1e-4)  # events stored as float32


def test_pool_chunk_records_what_reproduces_it():
    cfg, model, densities, fits = setup("inference.neyman.method=pool")
    inf = cfg.inference
    chunk = neyman_toys(cfg, densities, model, fits, 0.25, 0, 30, **QUIET)["exact"]
    assert set(chunk.datasets) == {"n_events", "aux"}
    lik = make_likelihood(model, inf.n_expected, inf.constraint_sigma)
    prepared = pool_toys(model, lik, model, 0.25, chunk.nuisance_generated, inf.n_expected, 30, chunk.seed,
                         POOL_WINDOW_SIGMAS * fits["exact"].sigma_nuisance)
    assert np.array_equal(prepared.aux.numpy(), chunk.datasets["aux"])
    assert np.array_equal(prepared.weights.sum(1).numpy(), chunk.datasets["n_events"])
    np.testing.assert_array_equal(batched_t(prepared, 0.25)[0], chunk.t)


def _chunk(mu: float, index: int, t: np.ndarray) -> tuple[dict, dict]:
    meta = {"mu": mu, "chunk": index, "method": "simulator", "toys": len(t),
            "densities": {"exact": {"failed": int(np.isnan(t).sum()), "nuisance_generated": 0.8, "seed": 1}}}
    return {"t_exact": t}, meta


def test_belt_pools_chunks_and_counts_failed_fits():
    cfg = setup("inference.neyman.points=2")[0]
    rng = np.random.default_rng(3)
    t = {mu: rng.chisquare(1, 60) for mu in (0.1, 0.3)}
    t[0.3][[4, 40]] = np.nan  # two failed fits, one in each chunk of mu = 0.3
    chunks = [_chunk(mu, k, t[mu][30 * k : 30 * (k + 1)]) for mu in (0.3, 0.1) for k in (1, 0)]
    belt = confidence_belt(cfg, chunks)
    rows = belt["densities"]["exact"]["points"]
    assert [r["mu"] for r in rows] == [0.1, 0.3] and [r["toys"] for r in rows] == [60, 60]
    assert [r["failed_fits"] for r in rows] == [0, 2] and belt["densities"]["exact"]["failed_fits"] == 2
    for row, mu in zip(rows, (0.1, 0.3)):  # chunk order does not matter for the quantiles
        expected = critical_values(t[mu], cfg.inference.levels)
        assert {k: row[k] for k in expected} == expected
        assert row["0.6827"]["low"] <= row["0.6827"]["value"] <= row["0.6827"]["high"]
    with pytest.raises(DataError, match="no Neyman toys at mu = \\[0.3\\]"):
        confidence_belt(cfg, chunks[2:])
    t[0.1][:55] = np.nan
    with pytest.raises(FitError, match="mu=0.1 \\[exact\\]: only 5 of 60 toy fits"):
        confidence_belt(cfg, [_chunk(mu, 0, t[mu]) for mu in (0.1, 0.3)])


def test_a_belt_at_the_chi2_quantiles_inverts_to_the_wilks_interval():
    cfg, model, densities, fits = setup()
    grid = cfg.inference.neyman.grid
    chunks = [_chunk(mu, 0, chi2.ppf(np.linspace(0.0005, 0.9995, 1000), 1)) for mu in grid]
    belt = confidence_belt(cfg, chunks)
    observed = simulate_observed(model, cfg)
    result = infer(cfg, densities, model, observed, belt, fits).summary
    for level in ("68", "95"):
        np.testing.assert_allclose(result["intervals"]["neyman"][level], result["intervals"]["asymptotic"][level],
                                   atol=2e-3)  # quantiles of 1000 points: c within ~0.3% of chi2
    assert result["details"]["exact"]["toys"]["failed_fits"] == 0


def test_toy_files_split_t_datasets_and_bookkeeping():
    cfg, model, densities, fits = setup()
    toys = neyman_toys(cfg, densities, model, fits, 0.2, 0, 5, **QUIET)
    t, datasets, meta = toy_files(toys, 0.2, 0, "simulator")
    assert set(t) == {"t_exact"} and set(datasets) == {"x_exact", "n_events_exact", "aux_exact"}
    assert meta["densities"]["exact"]["seed"] == toys["exact"].seed and meta["toys"] == 5


def test_failed_fits_count_as_infinite_t_in_the_quantiles():
    """A failed toy fit counts as t = +inf (conservative), never dropped: with 12 of 200 failed
    (6%) the 95% critical value is infinite (every mu accepted there), the 68.3% one is the
    quantile with the failed toys at the top; the value that dropping them gives is reported
    beside it, and the Neyman inversion accepts a point with an infinite critical value (with the
    cells next to it)."""
    t = np.random.default_rng(5).chisquare(1, 200)
    t[:12] = np.nan
    crit = critical_values(t, [0.6827, 0.95])
    full = np.where(np.isnan(t), np.inf, t)
    assert crit["0.95"]["value"] == np.inf and crit["0.95"]["high"] == np.inf
    assert crit["0.6827"]["value"] == pytest.approx(np.quantile(full, 0.6827), rel=1e-12)
    for level in (0.6827, 0.95):
        assert crit[f"{level:g}"]["value_failed_dropped"] == pytest.approx(np.quantile(t[12:], level), rel=1e-12)
    assert crit["0.6827"]["value"] > crit["0.6827"]["value_failed_dropped"]
    grid = np.linspace(0, 1, 11)
    iv = _neyman_with_an_infinite_critical_value(grid)
    # t_obs(0.7) = 4 > 1 is accepted, and so is every mu of the cells next to 0.7 (c interpolates to inf)
    assert (iv.low, iv.high) == (pytest.approx(0.4, abs=1e-6), pytest.approx(0.8, abs=1e-6))


def _neyman_with_an_infinite_critical_value(grid):
    from hsbi.inference import neyman_interval

    critical = np.full(11, 1.0)
    critical[7] = np.inf  # all toys failed at mu = 0.7: accepted
    return neyman_interval(grid, critical, lambda mu: ((mu - 0.5) / 0.1) ** 2, 0.6827)


def test_default_neyman_grid_is_sized_from_the_fisher_width():
    """With ``inference.neyman.mu_min/mu_max: null`` (the default) the grid is the truth +- (z +
    3) sigma_mu, z = sqrt(F^-1_chi2_1(95%)) and sigma_mu the expected Fisher width (constraint
    included, nuisance profiled). 95% intervals of 1,000 pooled toys at the truth leave the grid
    with probability P(|Z| > 3) = 0.27%: at most 2.7 + 3 sqrt(2.7) of them (the old [0.15, 0.25],
    +-3.8 sigma, truncated 4%). Explicit values stay overrides."""
    from hsbi.inference.batched_nd import fit, intervals

    cfg = load_config("default")
    ney, inf = cfg.inference.neyman, cfg.inference
    assert load_config("default", ["inference.neyman.mu_min=0.15", "inference.neyman.mu_max=0.25"]
                       ).inference.neyman.grid[::10] == (0.15, 0.25)
    model = cfg.model.build()
    lik = make_likelihood(model, inf.n_expected, inf.constraint_sigma)
    toys = pool_toys(model, lik, model, inf.truth.mu, inf.truth.nuisance, inf.n_expected, 1000, seed=2,
                     half_width=0.075)
    glob = fit(toys, inf.truth.mu)
    low, high, ok = intervals(toys, glob, q=float(chi2.ppf(0.95, 1)))
    sigma = float(np.std(glob.mu))  # the spread of mu_hat: the Fisher width to ~2%
    assert ney.mu_max - inf.truth.mu == pytest.approx(inf.truth.mu - ney.mu_min, rel=1e-3)
    assert ney.mu_max - inf.truth.mu == pytest.approx((1.96 + 3) * sigma, rel=0.05)
    truncated = int(np.sum((low < ney.mu_min) | (high > ney.mu_max)))
    assert ok.all() and truncated <= 2.7 + 3 * np.sqrt(2.7), truncated
