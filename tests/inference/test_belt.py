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
