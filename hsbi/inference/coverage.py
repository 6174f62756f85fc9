"""Coverage studies: datasets thrown at a known truth, checked against Wilks and Neyman intervals.

For each dataset ``t_mu`` at the true ``mu`` is computed; the Wilks interval covers the truth iff
``t < F^-1_chi2_1(CL)``, the Neyman interval iff ``t < c(mu_true)``, with ``c`` the CL-quantile of
``t`` on an independent set of toys thrown at the truth (the nuisance at its true value: the ideal
profile construction). Coverage errors are binomial, ``sqrt(p (1 - p) / N)`` (``statistics.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import chi2

from hsbi.config import AnalysisConfig
from hsbi.inference.analysis import TOY_WINDOW_POINTS, TOY_WINDOW_SIGMAS, toy_seed
from hsbi.inference.profile import (
    asymptotic_interval,
    fit_observed,
    likelihood_from_config,
    throw_toys,
    toy_statistics,
)
from hsbi.models.base import ComponentDensity, MixtureModel

__all__ = ["coverage_study"]


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
    datasets = throw_toys(model, mu, z, inf.n_expected, lik.aux_sigma, cov.datasets, cov.seed,
                          constraint=lik.constraint)
    references = throw_toys(model, mu, z, inf.n_expected, lik.aux_sigma, cov.datasets,
                            toy_seed(cov.seed + 1, mu), constraint=lik.constraint)
    summary: dict = {"truth": {"mu": mu, "nuisance": z}, "datasets": cov.datasets}
    t_values = {}
    for name, density in densities.items():
        sigma_z = fit_observed(density, lik, datasets[0], name=name).sigma_nuisance
        half = TOY_WINDOW_SIGMAS * max(sigma_z, 1e-3)
        report = lambda done, total, n=name: progress(f"CoverageStudy [{n}]: {done}/{total}")  # noqa: E731
        t, failed = toy_statistics(density, lik, datasets, mu, z, half, lik.nuisance_bounds,
                                   points=TOY_WINDOW_POINTS, progress=report)
        t_ref, failed_ref = toy_statistics(density, lik, references, mu, z, half,
                                           lik.nuisance_bounds, points=TOY_WINDOW_POINTS)
        good = np.isfinite(t)
        entry: dict = {"failed_fits": int(failed + failed_ref)}
        for cl in inf.levels:
            crit = float(np.quantile(t_ref[np.isfinite(t_ref)], cl))
            entry[f"{100 * cl:.0f}"] = {
                "asymptotic": _binomial(t[good] < chi2.ppf(cl, 1)),
                "neyman": _binomial(t[good] < crit),
                "neyman_critical_value": round(crit, 4),
            }
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
        t_values[name] = t
    return summary, t_values
