"""Analysis steps called by the workflow tasks: the observed fits, Neyman toys at one (point,
chunk), the confidence belt (critical values per point) and the final result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hsbi.config import AnalysisConfig, InferenceConfig
from hsbi.data import Dataset
from hsbi.exceptions import DataError, FitError
from hsbi.inference.asimov import asimov_dataset
from hsbi.inference.batched import batched_t, pool_toys
from hsbi.inference.likelihood import Likelihood
from hsbi.inference.minuit import minuit_fits
from hsbi.inference.profile import (
    Interval,
    ObservedFit,
    asymptotic_interval,
    critical_values,
    fit_observed,
    likelihood_from_config,
    neyman_interval,
    throw_toys,
    toy_statistics,
)
from hsbi.models.base import ComponentDensity, MixtureModel

__all__ = [
    "InferenceResult",
    "ToyChunk",
    "belt_critical",
    "confidence_belt",
    "infer",
    "neyman_toys",
    "observed_fits",
    "toy_files",
    "toy_seed",
]

#: Nuisance window of a toy fit, in units of the observed sigma of the nuisance, and its points
#: (a 1-sigma step; a toy whose minimum falls on the window's edge is refitted 3 times wider).
TOY_WINDOW_SIGMAS = 3.0
TOY_WINDOW_POINTS = 7
#: Half-width of the polynomial surrogates' window for pooled toys, in observed sigma_nuisance.
POOL_WINDOW_SIGMAS = 5.0
#: Asimov quadrature points per feature for 2D models (the median-expected intervals; 120^2 nodes
#: give the 220^2 widths to 1e-10 of the width).
ASIMOV_POINTS_2D = 120
#: Nuisance grid of the Asimov fit (parabolic refinement between points).
ASIMOV_NUISANCE_POINTS = 121
#: Fewest successful toy fits at a point for which a critical value is quoted.
MIN_GOOD_TOYS = 10


def toy_seed(base: int, mu: float, chunk: int = 0) -> int:
    """A seed that depends on the tested value and the chunk index only (not on a grid index)."""
    return int(np.random.SeedSequence([base, int(round(mu * 1e9)), chunk]).generate_state(1)[0])


def _likelihood(inf: InferenceConfig, model: MixtureModel) -> Likelihood:
    """The analysis likelihood (one place for every step here)."""
    return likelihood_from_config(inf, model)


def observed_fits(
    cfg: AnalysisConfig,
    densities: Mapping[str, ComponentDensity],
    model: MixtureModel,
    observed: Dataset,
) -> dict[str, ObservedFit]:
    """The observed profile likelihood under each density (shared by toys, belt and result)."""
    lik = _likelihood(cfg.inference, model)
    return {name: fit_observed(d, lik, observed, name=name) for name, d in densities.items()}


@dataclass(frozen=True)
class ToyChunk:
    """The toys of one (point, chunk) under one density.

    ``t``: ``(n,)`` t_mu per toy, NaN where the fit failed (``failed`` counts them);
    ``datasets``: what reproduces the toys: for simulator toys the events ``x`` ``(sum n_i, d)``
    as float32, ``n_events`` ``(n,)`` and ``aux`` ``(n,)``; for pooled toys ``n_events`` and
    ``aux`` (the events follow from ``seed``).
    """

    t: np.ndarray
    failed: int
    nuisance_generated: float
    seed: int
    datasets: dict[str, np.ndarray]


def _simulator_chunk(inf: InferenceConfig, lik: Likelihood, density: ComponentDensity, model: MixtureModel,
                     fit: ObservedFit, mu: float, z_gen: float, n_toys: int, seed: int,
                     report: Callable[[int, int], None]) -> ToyChunk:
    """Fresh events per toy from the simulator, fitted one by one on a nuisance window."""
    toys = throw_toys(model, mu, z_gen, inf.n_expected, lik.aux_sigma, n_toys, seed, constraint=lik.constraint)
    t, failed = toy_statistics(
        density, lik, toys, mu, z_gen, TOY_WINDOW_SIGMAS * fit.sigma_nuisance,
        lik.nuisance_bounds, points=TOY_WINDOW_POINTS, progress=report,
    )
    datasets = {
        "x": np.concatenate([d.x for d in toys]).astype(np.float32),
        "n_events": np.array([len(d.x) for d in toys], dtype=np.int32),
        "aux": np.array([d.aux for d in toys]),
    }
    return ToyChunk(t, failed, z_gen, seed, datasets)


def _pool_chunk(inf: InferenceConfig, lik: Likelihood, density: ComponentDensity, model: MixtureModel,
                fit: ObservedFit, mu: float, z_gen: float, n_toys: int, seed: int,
                report: Callable[[int, int], None]) -> ToyChunk:
    """Toys resampled from per-process pools (``batched.pool_toys``), fitted all at once."""
    prepared = pool_toys(density, lik, model, mu, z_gen, inf.n_expected, n_toys, seed,
                         POOL_WINDOW_SIGMAS * fit.sigma_nuisance)
    t, edge = batched_t(prepared, mu)
    t[edge] = np.nan  # a fit on the window's edge is counted as failed
    report(n_toys, n_toys)
    datasets = {"n_events": prepared.weights.sum(1).numpy().round().astype(np.int32),
                "aux": prepared.aux.numpy().copy()}
    return ToyChunk(t, int(edge.sum()), z_gen, seed, datasets)


def neyman_toys(
    cfg: AnalysisConfig,
    densities: Mapping[str, ComponentDensity],
    model: MixtureModel,
    fits: Mapping[str, ObservedFit],
    mu: float,
    chunk: int,
    n_toys: int,
    progress: Callable[[str], None] = print,
) -> dict[str, ToyChunk]:
    """``n_toys`` toys at ``(mu, nuisance_hat_hat(mu))`` per density, seeded by ``(seed, mu, chunk)``.

    Toys are thrown from the simulator (or drawn from pools, ``inference.neyman.method: pool``)
    at the observed conditional MLE of the nuisance under each density (``fits``), with the
    auxiliary measurement resampled (``statistics.md``, Neyman).
    """
    inf, neyman = cfg.inference, cfg.inference.neyman
    lik = _likelihood(inf, model)
    make = _pool_chunk if neyman.method == "pool" else _simulator_chunk
    seed = toy_seed(neyman.seed, mu, chunk)
    out = {}
    for name, density in densities.items():
        def report(done: int, total: int, name: str = name) -> None:
            progress(f"NeymanToys mu={mu:g} chunk {chunk} [{name}]: {done}/{total} {neyman.method} toys")

        fit = fits[name]
        out[name] = make(inf, lik, density, model, fit, mu, fit.nuisance_hat_hat(mu), n_toys, seed, report)
    return out


def toy_files(
    toys: Mapping[str, ToyChunk], mu: float, chunk: int, method: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """A chunk's artifact content: ``t_<density>`` arrays, ``<key>_<density>`` dataset arrays,
    and the JSON bookkeeping (seeds, failed fits, generating nuisance per density)."""
    t = {f"t_{name}": c.t for name, c in toys.items()}
    datasets = {f"{key}_{name}": v for name, c in toys.items() for key, v in c.datasets.items()}
    meta = {
        "mu": mu, "chunk": chunk, "method": method,
        "toys": len(next(iter(toys.values())).t),
        "densities": {name: {"failed": c.failed, "nuisance_generated": c.nuisance_generated,
                             "seed": c.seed} for name, c in toys.items()},
    }
    return t, datasets, meta


def _belt_row(name: str, mu: float, parts: Sequence[tuple[Mapping[str, np.ndarray], Mapping]],
              levels: Sequence[float]) -> dict:
    t = np.concatenate([arrays[f"t_{name}"] for arrays, _ in parts])
    failed = int(sum(meta["densities"][name]["failed"] for _, meta in parts))
    good = int(np.isfinite(t).sum())
    if good < MIN_GOOD_TOYS:
        raise FitError(f"Neyman toys at mu={mu:g} [{name}]: only {good} of {len(t)} toy fits "
                       f"succeeded (need {MIN_GOOD_TOYS}); check the estimator or inference.neyman")
    return {"mu": mu, "toys": len(t), "failed_fits": failed, **critical_values(t, levels)}


def confidence_belt(
    cfg: AnalysisConfig, chunks: Sequence[tuple[Mapping[str, np.ndarray], Mapping]]
) -> dict:
    """Critical values per grid point, level and density from the toys of every (point, chunk).

    ``chunks``: per NeymanToys branch its ``t_<density>`` arrays and its bookkeeping (see
    :func:`toy_files`). Each critical value carries its order-statistic 1-sigma band (``low``,
    ``high``); failed fits are counted per point and in total and enter the quantiles as
    ``t = +inf`` (conservative); ``value_failed_dropped`` is the quantile without them.
    """
    inf = cfg.inference
    grid = inf.neyman.grid
    by_mu: dict[float, list] = {mu: [] for mu in grid}
    for arrays, meta in chunks:
        by_mu[meta["mu"]].append((arrays, meta))
    missing = [mu for mu, parts in by_mu.items() if not parts]
    if missing:
        raise DataError(f"no Neyman toys at mu = {missing}: every grid point needs a NeymanToys branch")
    densities = {}
    for name in chunks[0][1]["densities"]:
        rows = [_belt_row(name, mu, by_mu[mu], inf.levels) for mu in grid]
        densities[name] = {"failed_fits": sum(r["failed_fits"] for r in rows), "points": rows}
    return {
        "grid": list(grid), "levels": list(inf.levels), "method": inf.neyman.method,
        "toys_per_point": inf.neyman.toys, "chunk": inf.neyman.chunk, "densities": densities,
    }


def belt_critical(belt: Mapping, key: str = "value") -> dict[str, dict[str, np.ndarray]]:
    """``{density: {level: (P,) array}}`` of the belt's critical values (or their ``low``/``high``)."""
    return {
        name: {f"{cl:g}": np.array([row[f"{cl:g}"][key] for row in entry["points"]]) for cl in belt["levels"]}
        for name, entry in belt["densities"].items()
    }


@dataclass(frozen=True)
class InferenceResult:
    """Everything ``InferProfileLikelihood`` reports: a JSON summary and arrays for the plot."""

    summary: dict
    scan_mu: np.ndarray
    scans: dict[str, np.ndarray]
    grid: np.ndarray
    critical: dict[str, dict[str, np.ndarray]]


def _interval_json(iv: Interval) -> list[float]:
    return [round(iv.low, 6), round(iv.high, 6)]


def _key(level: float) -> str:
    return f"{100 * level:.0f}"


def _cross_checks(cfg: AnalysisConfig, name: str, density: ComponentDensity, model: MixtureModel,
                  lik: Likelihood, observed: Dataset, fit: ObservedFit) -> tuple[dict[str, dict], dict]:
    """MINOS intervals on the observed data (iminuit on the continuous NLL with its own
    numerical derivatives, independent of the fitting interface's; MIGRAD started at the
    fit's seed on the nuisance grid) and the expected Wilks intervals: those of the Asimov dataset at the configured
    truth (median expected; Cowan et al., arXiv:1007.1727). A MIGRAD/MINOS failure is reported
    in place of the interval, never hidden. Also returns the tolerance each MINOS level needed."""
    inf = cfg.inference
    minos: dict = {}
    tolerance: dict = {}
    try:  # one MIGRAD, then MINOS per level
        start = fit.seed.global_fit()[:2]  # the grid's fit: the cross-check shares nothing with the fit
        fits = minuit_fits(density, lik, observed, None, start, tuple(inf.levels))
        for cl, mf in fits.items():
            minos[_key(cl)] = _interval_json(mf.interval) if mf.valid else f"MINOS invalid: {_interval_json(mf.interval)}"
            tolerance[_key(cl)] = mf.tolerance
    except FitError as err:
        # the message without iminuit's boxed summary, which holds a run time (results stay reproducible)
        minos = {_key(cl): "failed: " + str(err).split("\u250c")[0].strip().rstrip(":") for cl in inf.levels}
    asimov = asimov_dataset(model, inf.truth.mu, inf.truth.nuisance, inf.n_expected, points=ASIMOV_POINTS_2D
                            if model.n_features == 2 else None)
    expected = fit_observed(density, lik, asimov, points=ASIMOV_NUISANCE_POINTS, name=name)
    return ({"minos": minos,
             "expected": {_key(cl): _interval_json(asymptotic_interval(expected, cl)) for cl in inf.levels}},
            tolerance)


def infer(
    cfg: AnalysisConfig,
    densities: Mapping[str, ComponentDensity],
    model: MixtureModel,
    observed: Dataset,
    belt: Mapping,
    fits: Mapping[str, ObservedFit] | None = None,
) -> InferenceResult:
    """Observed fits, Wilks intervals and Neyman intervals by inverting ``belt`` (from
    :func:`confidence_belt`) per density; ``fits`` as from :func:`observed_fits` if at hand."""
    inf = cfg.inference
    lik = _likelihood(inf, model)
    grid = np.array(belt["grid"])
    fits = fits if fits is not None else observed_fits(cfg, densities, model, observed)
    critical = belt_critical(belt)
    entries = {}
    for name, fit in fits.items():
        asym = {_key(cl): asymptotic_interval(fit, cl) for cl in inf.levels}
        neyman = {
            _key(cl): neyman_interval(grid, critical[name][f"{cl:g}"], fit.t, cl) for cl in inf.levels
        }
        checks, minos_tolerance = _cross_checks(cfg, name, densities[name], model, lik, observed, fit)
        entries[name] = {
            "best_fit": {"mu": round(fit.mu_hat, 6), "nuisance": round(fit.nuisance_hat, 6)},
            "hesse": {name: round(fit.best.error(name), 6) for name in ("mu", "nuisance")},
            "intervals": {
                "asymptotic": {k: _interval_json(v) for k, v in asym.items()},
                "neyman": {k: _interval_json(v) for k, v in neyman.items()},
                **checks,
            },
            "minos_tolerance": minos_tolerance,
            "neyman_edges_at_grid_boundary": sorted(
                k for k, v in neyman.items() if v.open_low or v.open_high
            ),
            "toys": {
                "per_point": belt["toys_per_point"],
                "method": belt["method"],
                "failed_fits": belt["densities"][name]["failed_fits"],
                "critical_values": belt["densities"][name]["points"],
            },
        }
    lo = min(min(e["intervals"]["asymptotic"][_key(max(inf.levels))][0] for e in entries.values()), grid[0])
    hi = max(max(e["intervals"]["asymptotic"][_key(max(inf.levels))][1] for e in entries.values()), grid[-1])
    scan_mu = np.linspace(max(lik.mu_bounds[0], lo - 0.1 * (hi - lo)), min(lik.mu_bounds[1], hi + 0.1 * (hi - lo)), inf.scan_points)
    scans = {name: fit.scan(scan_mu) for name, fit in fits.items()}
    main = next(iter(entries))
    summary = {
        "poi": inf.poi,
        "convention": f"mu: {model.poi_label}; nuisance: {model.nuisance_label} ({lik.constraint} constraint)",
        "truth": {"mu": inf.truth.mu, "nuisance": inf.truth.nuisance},
        "estimator": main,
        "best_fit": entries[main]["best_fit"],
        "hesse": entries[main]["hesse"],
        "intervals": entries[main]["intervals"],
        "observed": {"events": int(len(observed.x)), "aux": round(observed.aux, 6)},
        "levels": {_key(cl): cl for cl in inf.levels},
        **{name: e for name, e in entries.items() if name != main},
        "details": {name: {k: e[k] for k in ("neyman_edges_at_grid_boundary", "toys", "minos_tolerance")}
                    for name, e in entries.items()},
    }
    return InferenceResult(summary, scan_mu, scans, grid, critical)
