"""Coverage studies: datasets thrown at a known truth, checked against Wilks and Neyman intervals.

For each dataset ``t_mu`` at the true ``mu`` is computed; the Wilks interval covers the truth iff
``t < F^-1_chi2_1(CL)``, the Neyman interval iff ``t < c(mu_true)``, with ``c`` the CL-quantile of
``t`` on an independent set of reference toys. ``inference.coverage.reference: truth`` throws them
at the true nuisance (the ideal profile construction); ``profiled`` at each dataset's conditional
MLE of the nuisance at ``mu_true``, as NeymanToys does for the observed data: toys at
:data:`REFERENCE_NODES` nuisance values (quantiles of the datasets' ``z_hat_hat``), each
dataset's ``c`` interpolated linearly between the nodes' quantiles. Failed fits count as
``t = +inf`` (a dataset: not covered; a reference toy: a higher ``c``). Wilks errors are binomial,
``sqrt(p (1 - p) / N)`` (``statistics.md``); Neyman errors count the reference quantile too,
``sqrt(p (1 - p) (1 / N + 1 / N_ref))`` with ``N_ref`` the toys per node.

``inference.coverage.method: pool`` draws the datasets and the reference toys from the same
per-process pools (``batched.pool_toys``; for a data-driven model, resampled from its held-out
``test`` events), so that both follow one distribution, and fits them all at once; the Neyman
error then counts the reference toys' quantile too, and the mean width is that of every
dataset's Wilks interval. The pools' expectation (every pool event weighted by its process's
yield over the pool's size) is fitted too: ``t_A`` at the truth on it is the non-centrality the
datasets share, from a finite pool (for a data-driven model, the finite held-out sample) and from
the estimator's mismodelling alike; with the datasets' spread of ``mu_hat`` it predicts their
Wilks coverage (``pool_expectation`` in the summary; see ``_expectation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import chi2, norm

from hsbi.config import AnalysisConfig
from hsbi.exceptions import FitError
from hsbi.inference.analysis import (
    POOL_WINDOW_SIGMAS,
    TOY_WINDOW_POINTS,
    TOY_WINDOW_SIGMAS,
    toy_seed,
)
from hsbi.inference.asimov import asimov_dataset
from hsbi.inference.batched import pool_toys, pool_toys_and_expectation
from hsbi.inference.batched_nd import BatchedToys, FitResult, intervals, profile_fits
from hsbi.inference.likelihood import Likelihood
from hsbi.inference.profile import (
    asymptotic_interval,
    fit_observed,
    likelihood_from_config,
    quantile_with_failed,
    throw_toys,
    toy_fits,
)
from hsbi.models.base import ComponentDensity, MixtureModel

__all__ = ["REFERENCE_NODES", "coverage_study"]

#: Nuisance values at which ``reference: profiled`` throws reference toys (``inference.coverage.datasets``
#: each): the 5%, 27.5%, 50%, 72.5% and 95% quantiles of the datasets' ``z_hat_hat``.
REFERENCE_NODES = 5


def _binomial(hits: np.ndarray) -> dict[str, float]:
    p = float(np.mean(hits))
    return {"value": round(p, 5), "error": round(float(np.sqrt(p * (1 - p) / len(hits))), 5)}


def coverage_study(
    cfg: AnalysisConfig,
    densities: Mapping[str, ComponentDensity],
    model: MixtureModel,
    progress: Callable[[str], None] = print,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Coverage of Wilks and Neyman intervals at ``cfg.inference.truth`` for each density.

    Returns a JSON-able summary and, per density, the ``t`` values of the datasets (for plots).
    """
    inf, cov = cfg.inference, cfg.inference.coverage
    mu, z = inf.truth.mu, inf.truth.nuisance
    lik = likelihood_from_config(inf, model)
    model = model.for_split("test")
    if cov.method == "pool":
        return _pool_study(cfg, densities, model, lik, progress)
    datasets = throw_toys(model, mu, z, inf.n_expected, lik.aux_sigma, cov.datasets, cov.seed,
                          constraint=lik.constraint)
    summary: dict = {"truth": {"mu": mu, "nuisance": z}, "datasets": cov.datasets, "reference": cov.reference}
    t_values = {}
    for name, density in densities.items():
        sigma_z = fit_observed(density, lik, datasets[0], name=name).sigma_nuisance
        half = TOY_WINDOW_SIGMAS * max(sigma_z, 1e-3)
        report = lambda done, total, n=name: progress(f"CoverageStudy [{n}]: {done}/{total}")  # noqa: E731
        fits = toy_fits(density, lik, datasets, mu, z, half, lik.nuisance_bounds, points=TOY_WINDOW_POINTS,
                        progress=report)

        def reference(node: float, k: int, density: ComponentDensity = density, half: float = half) -> np.ndarray:
            toys = throw_toys(model, mu, node, inf.n_expected, lik.aux_sigma, cov.datasets,
                              _reference_seed(cov.seed, mu, k), constraint=lik.constraint)
            return toy_fits(density, lik, toys, mu, node, half, lik.nuisance_bounds, points=TOY_WINDOW_POINTS).t

        nodes = _nodes(cov.reference, z, fits.nuisance_hat_hat)
        entry = _entry(fits.t, fits.nuisance_hat_hat, nodes, [reference(n, k) for k, n in enumerate(nodes)],
                       inf.levels)
        widths = [
            asymptotic_interval(fit_observed(density, lik, d, name=name), cl)
            for d in datasets[: cov.width_datasets]
            for cl in (inf.levels[0],)
        ]
        if widths:
            w = np.array([iv.high - iv.low for iv in widths])
            entry["mean_width"] = {f"{100 * inf.levels[0]:.0f}": round(float(w.mean()), 6),
                                   "error": round(float(w.std(ddof=1) / np.sqrt(len(w))), 6)}
        summary[name] = entry
        t_values[name] = fits.t
    return summary, t_values


def _reference_seed(seed: int, mu: float, node: int) -> int:
    """The reference toys' seed at node ``node`` (node 0 of ``truth``: the former single seed)."""
    return toy_seed(seed + 1, mu, node)


def _nodes(reference: str, truth: float, nuisance_hat_hat: np.ndarray) -> np.ndarray:
    """Where the reference toys are thrown: the true nuisance, or quantiles of the datasets'
    conditional MLEs (``profiled``; see :data:`REFERENCE_NODES`)."""
    finite = nuisance_hat_hat[np.isfinite(nuisance_hat_hat)]
    if reference == "truth" or not len(finite):
        return np.array([truth])
    return np.unique(np.quantile(finite, np.linspace(0.05, 0.95, REFERENCE_NODES)))


def _entry(t: np.ndarray, nuisance_hat_hat: np.ndarray, nodes: np.ndarray, t_refs: list[np.ndarray],
           levels: tuple[float, ...]) -> dict:
    """Coverage at each level from the datasets' ``t`` and, per node, its reference toys' ``t``
    (failed fits, NaN, count as ``+inf``): each dataset's critical value interpolated at its
    ``z_hat_hat`` between the nodes' quantiles. The Neyman error counts the reference quantile
    too: ``sqrt(p (1 - p) (1 / N + 1 / N_ref))``."""
    good, n_ref = int(np.isfinite(t).sum()), min(len(r) for r in t_refs)
    fitted_ref = min(int(np.isfinite(r).sum()) for r in t_refs)
    if good < 10 or fitted_ref < 10:
        raise FitError(f"coverage: only {good} datasets and {fitted_ref} reference toys (at a node) were "
                       "fitted inside the nuisance window; check the estimator or inference.nuisance_bounds")
    t_all = np.where(np.isnan(t), np.inf, t)
    z = np.where(np.isfinite(nuisance_hat_hat), nuisance_hat_hat, nodes[len(nodes) // 2])
    entry: dict = {"failed_fits": int(len(t) - good + sum(int(np.isnan(r).sum()) for r in t_refs)),
                   "reference_nodes": [round(float(v), 6) for v in nodes], "reference_toys_per_node": n_ref}
    for cl in levels:
        at_nodes = np.array([quantile_with_failed(r, cl) for r in t_refs])
        crit = np.interp(z, nodes, np.minimum(at_nodes, 1e300))
        neyman = _binomial(t_all < crit)
        p = neyman["value"]
        neyman["error"] = round(float(np.sqrt(p * (1 - p) * (1 / len(t) + 1 / n_ref))), 5)
        entry[f"{100 * cl:.0f}"] = {
            "asymptotic": _binomial(t_all < chi2.ppf(cl, 1)),
            "neyman": neyman,
            "neyman_critical_value": round(float(np.median(crit)), 4),
        }
    return entry


def _expectation(expected: BatchedToys, mu: float, levels: tuple[float, ...], mu_hats: np.ndarray) -> dict:
    """The fit of the pools' expectation: best fit, 68.3% interval, ``t_A`` at the truth, the
    signed shift ``b = sign(mu_hat - mu) sqrt(t_A)`` in standard deviations of ``mu_hat``, the
    datasets' spread ``s`` (the standard deviation of their ``mu_hats`` over the expectation's),
    and the Wilks coverage that a Gaussian ``mu_hat`` with this shift and spread has:
    ``P(|s Z + b| < sqrt(F^-1_chi2_1(CL)))`` (a shift alone makes ``t`` a non-central chi2 with
    non-centrality ``b^2``).

    A dataset takes a share ``f`` of each pool without replacement (``pool_share``; 1/20 by
    default), which narrows the spread around the pools' expectation by up to ``sqrt(1 - f)``
    (the finite-population correction; over many pools the shift's own variance, ``f``, restores
    it). The shift is measured independently of the datasets; the spread from them."""
    cond, glob = profile_fits(expected, mu)
    t_a = float(max(cond.nll[0] - min(glob.nll[0], cond.nll[0]), 0.0) * 2.0)
    low, high, ok = intervals(expected, glob, q=1.0)
    w = expected.weights.numpy()[0]
    spread = float(np.std(mu_hats, ddof=1) / (0.5 * (high[0] - low[0]))) if ok[0] and len(mu_hats) > 1 else None
    shift = float(np.sign(glob.mu[0] - mu) * np.sqrt(t_a))
    s = spread or 1.0
    edge = {cl: float(np.sqrt(chi2.ppf(cl, 1))) for cl in levels}
    predicted = {f"{100 * cl:.0f}": round(float(norm.cdf((e - shift) / s) - norm.cdf((-e - shift) / s)), 5)
                 for cl, e in edge.items()}
    return {
        "mu_hat": round(float(glob.mu[0]), 6), "nuisance_hat": round(float(glob.nuisance[0, 0]), 6),
        "interval_68": [round(float(low[0]), 6), round(float(high[0]), 6)] if ok[0] else None,
        "t_at_truth": round(t_a, 5), "shift_sigma": round(shift, 4),
        "spread_ratio": None if spread is None else round(spread, 4),
        "pool_share": round(float(w.sum() / max((w > 0).sum(), 1)), 5),
        "at_edge": bool(glob.at_edge[0] or cond.at_edge[0]),
        "wilks_predicted": predicted,
    }


def _pool_t(cond: FitResult, glob: FitResult) -> tuple[np.ndarray, np.ndarray]:
    """``t`` and ``z_hat_hat`` per toy from its conditional and global fits, NaN where either failed."""
    t = 2.0 * (cond.nll - np.minimum(glob.nll, cond.nll))
    failed = cond.failed | glob.failed
    return np.where(failed, np.nan, t), np.where(failed, np.nan, cond.nuisance[:, 0])


def _pool_study(cfg: AnalysisConfig, densities: Mapping[str, ComponentDensity], model: MixtureModel,
                lik: Likelihood, progress: Callable[[str], None]) -> tuple[dict, dict[str, np.ndarray]]:
    """Coverage with pooled datasets and batched fits (see the module docstring)."""
    inf, cov = cfg.inference, cfg.inference.coverage
    mu, z = inf.truth.mu, inf.truth.nuisance
    asimov = asimov_dataset(model, mu, z, inf.n_expected) if not model.exact else None
    summary: dict = {"truth": {"mu": mu, "nuisance": z}, "datasets": cov.datasets, "method": "pool",
                     "reference": cov.reference}
    t_values = {}
    for name, density in densities.items():
        first = asimov if asimov is not None else throw_toys(model, mu, z, inf.n_expected, lik.aux_sigma, 1,
                                                             cov.seed, constraint=lik.constraint)[0]
        sigma_z = fit_observed(density, lik, first, name=name, points=41).sigma_nuisance  # sets the window
        half = POOL_WINDOW_SIGMAS * max(sigma_z, 1e-3)
        n, profiled = cov.datasets, cov.reference == "profiled"
        progress(f"CoverageStudy [{name}]: {n} datasets and {n} reference toys "
                 + ("per node of the datasets' conditional MLEs" if profiled else "from one set of pools")
                 + ", batched fits")
        toys, expected = pool_toys_and_expectation(density, lik, model, mu, z, inf.n_expected,
                                                   n if profiled else 2 * n, cov.seed, half)
        cond, glob = profile_fits(toys, mu)
        t_all, z_hh = _pool_t(cond, glob)
        if profiled:
            nodes = _nodes(cov.reference, z, z_hh)
            t_refs = [_pool_t(*profile_fits(pool_toys(density, lik, model, mu, node, inf.n_expected, n,
                                                      _reference_seed(cov.seed, mu, k), half), mu))[0]
                      for k, node in enumerate(nodes)]
        else:
            nodes, t_refs = np.array([z]), [t_all[n:]]
        t = t_all[:n]
        entry = _entry(t, z_hh[:n], nodes, t_refs, inf.levels)
        low, high, ok = intervals(toys, glob, q=float(chi2.ppf(inf.levels[0], 1)))
        w = (high - low)[: cov.datasets][ok[: cov.datasets]]
        if len(w) > 1:
            entry["mean_width"] = {f"{100 * inf.levels[0]:.0f}": round(float(w.mean()), 6),
                                   "error": round(float(w.std(ddof=1) / np.sqrt(len(w))), 6),
                                   "intervals": int(len(w))}
        good = np.isfinite(t)
        entry["pool_expectation"] = _expectation(expected, mu, inf.levels, glob.mu[: cov.datasets][good])
        summary[name] = entry
        t_values[name] = t
    return summary, t_values
