"""Analysis steps called by the workflow tasks: Neyman toys at one point, and the final result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hsbi.config import AnalysisConfig
from hsbi.data import Dataset
from hsbi.inference.batched import batched_t, pool_toys
from hsbi.inference.profile import (
    Interval,
    ObservedFit,
    asymptotic_interval,
    critical_values,
    fit_observed,
    make_likelihood,
    neyman_interval,
    throw_toys,
    toy_statistics,
)
from hsbi.models.base import ComponentDensity, MixtureModel

__all__ = ["InferenceResult", "infer", "neyman_toys", "toy_seed"]

#: Nuisance window of a toy fit, in units of the observed sigma of the nuisance, and its points
#: (a 1-sigma step; a toy whose minimum falls on the window's edge is refitted 3 times wider).
TOY_WINDOW_SIGMAS = 3.0
TOY_WINDOW_POINTS = 7
#: Half-width of the polynomial surrogates' window for pooled toys, in observed sigma_nuisance.
POOL_WINDOW_SIGMAS = 5.0


def toy_seed(base: int, mu: float) -> int:
    """A seed that depends on the tested value (not on its index in a grid)."""
    return int(np.random.SeedSequence([base, int(round(mu * 1e9))]).generate_state(1)[0])


def neyman_toys(
    cfg: AnalysisConfig,
    densities: Mapping[str, ComponentDensity],
    model: MixtureModel,
    observed: Dataset,
    mu: float,
    progress: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Toys at ``(mu, nuisance_hat_hat(mu))`` for each density; returns ``t`` and bookkeeping.

    Toys are thrown from the simulator at the observed conditional MLE of the nuisance under
    each density, with the auxiliary measurement resampled (``statistics.md``, Neyman).
    """
    inf = cfg.inference
    lik = make_likelihood(model, inf.n_expected, inf.constraint_sigma)
    out = {}
    for name, density in densities.items():
        fit = fit_observed(density, lik, observed, model.nuisance_range)
        z_gen = fit.nuisance_hat_hat(mu)
        seed = toy_seed(inf.neyman.seed, mu)
        if inf.neyman.method == "pool":
            prepared = pool_toys(density, lik, model, mu, z_gen, inf.n_expected, inf.neyman.toys,
                                 seed, POOL_WINDOW_SIGMAS * fit.sigma_nuisance)
            t, edge = batched_t(prepared, mu)
            t[edge] = np.nan  # a fit on the window's edge is counted as failed
            progress(f"NeymanToys mu={mu:g} [{name}]: {len(t)}/{len(t)} pooled toys")
            out[name] = {"t": t, "failed": int(edge.sum()), "nuisance_generated": z_gen, "seed": seed}
            continue
        toys = throw_toys(model, mu, z_gen, inf.n_expected, inf.constraint_sigma, inf.neyman.toys, seed)

        def report(done: int, total: int, name: str = name) -> None:
            progress(f"NeymanToys mu={mu:g} [{name}]: {done}/{total} toys")

        t, failed = toy_statistics(
            density, lik, toys, mu, z_gen, TOY_WINDOW_SIGMAS * fit.sigma_nuisance,
            model.nuisance_range, points=TOY_WINDOW_POINTS, progress=report,
        )
        out[name] = {"t": t, "failed": failed, "nuisance_generated": z_gen, "seed": seed}
    return out


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


def infer(
    cfg: AnalysisConfig,
    densities: Mapping[str, ComponentDensity],
    model: MixtureModel,
    observed: Dataset,
    toys: Sequence[Mapping[str, Mapping]],
) -> InferenceResult:
    """Observed fits, Wilks and Neyman intervals per density (``toys`` ordered like the grid)."""
    inf = cfg.inference
    lik = make_likelihood(model, inf.n_expected, inf.constraint_sigma)
    grid = np.array(inf.neyman.grid)
    fits: dict[str, ObservedFit] = {
        name: fit_observed(d, lik, observed, model.nuisance_range) for name, d in densities.items()
    }
    entries, critical = {}, {}
    for name, fit in fits.items():
        crit = [critical_values(point[name]["t"], inf.levels) for point in toys]
        critical[name] = {f"{cl:g}": np.array([c[f"{cl:g}"]["value"] for c in crit]) for cl in inf.levels}
        asym = {_key(cl): asymptotic_interval(fit, cl) for cl in inf.levels}
        neyman = {
            _key(cl): neyman_interval(grid, critical[name][f"{cl:g}"], fit.t, cl) for cl in inf.levels
        }
        entries[name] = {
            "best_fit": {"mu": round(fit.mu_hat, 6), "nuisance": round(fit.nuisance_hat, 6)},
            "intervals": {
                "asymptotic": {k: _interval_json(v) for k, v in asym.items()},
                "neyman": {k: _interval_json(v) for k, v in neyman.items()},
            },
            "neyman_edges_at_grid_boundary": sorted(
                k for k, v in neyman.items() if v.open_low or v.open_high
            ),
            "toys": {
                "per_point": inf.neyman.toys,
                "failed_fits": int(sum(point[name]["failed"] for point in toys)),
                "critical_values": [
                    {"mu": float(mu), **c} for mu, c in zip(grid, crit)
                ],
            },
        }
    lo = min(min(e["intervals"]["asymptotic"][_key(max(inf.levels))][0] for e in entries.values()), grid[0])
    hi = max(max(e["intervals"]["asymptotic"][_key(max(inf.levels))][1] for e in entries.values()), grid[-1])
    scan_mu = np.linspace(max(lik.mu_bounds[0], lo - 0.1 * (hi - lo)), min(lik.mu_bounds[1], hi + 0.1 * (hi - lo)), inf.scan_points)
    scans = {name: fit.scan(scan_mu) for name, fit in fits.items()}
    main = next(iter(entries))
    summary = {
        "poi": inf.poi,
        "convention": "mu is the signal fraction; expected event count fixed (n_expected)",
        "truth": {"mu": inf.truth.mu, "nuisance": inf.truth.nuisance},
        "estimator": main,
        "best_fit": entries[main]["best_fit"],
        "intervals": entries[main]["intervals"],
        "observed": {"events": int(len(observed.x)), "aux": round(observed.aux, 6)},
        "levels": {_key(cl): cl for cl in inf.levels},
        **{name: e for name, e in entries.items() if name != main},
        "details": {name: {k: e[k] for k in ("neyman_edges_at_grid_boundary", "toys")} for name, e in entries.items()},
    }
    return InferenceResult(summary, scan_mu, scans, grid, critical)
