"""Posteriors over event sets: grid densities, credible intervals, simulation-based calibration
(rank statistics, expected coverage), streaming updates, and the comparison of the set posterior
with the exact hierarchical one and the product of per-event posteriors on the same sets.

References: Talts et al., SBC (arXiv:1804.06788); Hermans et al., expected coverage
(arXiv:2110.06581); Heinrich et al. (arXiv:2306.12584).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from hsbi.config.sets import SetsConfig
from hsbi.estimators.npe import SetNPE, StreamingPosterior
from hsbi.exceptions import DataError
from hsbi.models.bump_hunt import SetModel

__all__ = [
    "PosteriorSummary",
    "compare_posteriors",
    "credible_interval",
    "expected_coverage",
    "infer_posterior",
    "method_densities",
    "nominal_coverage",
    "posterior_grid",
    "rank_bins",
    "rank_uniformity",
    "sbc_ranks",
    "simulate_sets",
    "stream",
    "summarise",
]


def simulate_sets(model: SetModel, n: int, seed: int, size: int | None = None,
                  theta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` sets with parameters from the prior (or ``theta`` ``(n, 2)``): ``(theta, events,
    lengths)``; ``size`` fixes the set size (models with a chosen size)."""
    rng = np.random.default_rng(seed)
    theta = model.sample_prior(rng, n) if theta is None else model.check_theta(theta)
    sizes = None if (size is None or model.random_size) else np.full(n, size)
    events, lengths = model.simulate(rng, theta, sizes)
    return theta, events, lengths


def posterior_grid(npe: SetNPE, events: np.ndarray, lengths: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Posterior densities of the POI on ``grid`` ``(F,)`` per set, normalised by the trapezoid
    rule: ``(B, F)``."""
    logp = npe.log_posterior(events, lengths, np.asarray(grid)[:, None])
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return p / np.trapezoid(p, grid, axis=1)[:, None]


@dataclass(frozen=True)
class PosteriorSummary:
    """Mean, standard deviation and central credible intervals ``{level: (low, high)}``."""

    mean: float
    std: float
    intervals: dict[float, tuple[float, float]]


def credible_interval(grid: np.ndarray, density: np.ndarray, level: float) -> tuple[float, float]:
    """The central (equal-tailed) credible interval at ``level`` from a density on ``grid``."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    tail = (1 - level) / 2
    return float(np.interp(tail, cdf, grid)), float(np.interp(1 - tail, cdf, grid))


def summarise(grid: np.ndarray, density: np.ndarray, levels: Sequence[float]) -> PosteriorSummary:
    mean = float(np.trapezoid(grid * density, grid))
    std = float(np.sqrt(max(np.trapezoid((grid - mean) ** 2 * density, grid), 0.0)))
    return PosteriorSummary(mean, std, {cl: credible_interval(grid, density, cl) for cl in levels})


def sbc_ranks(npe: SetNPE, model: SetModel, n_sets: int, n_samples: int, seed: int,
              size: int | None = None, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """SBC: for sets with the POI from the prior, the rank of the true POI among ``n_samples``
    posterior draws (0..n_samples); returns ``(ranks, true POI)``."""
    theta, events, lengths = simulate_sets(model, n_sets, seed, size)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    ranks = np.empty(n_sets, dtype=np.int64)
    for s in range(0, n_sets, batch):
        e = slice(s, min(s + batch, n_sets))
        draws = npe.sample(events[starts[e.start] : starts[e.stop]], lengths[e], n_samples, seed=seed + s)
        ranks[e] = (draws[:, :, 0] < theta[e, :1]).sum(1)
    return ranks, theta[:, 0]


def rank_bins(n_samples: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges over the ``n_samples + 1`` ranks and each bin's probability under uniform
    ranks (bins hold whole ranks: 101 ranks in 20 bins are 6 + 19 x 5, not 5.05 each)."""
    edges = np.linspace(0, n_samples + 1, bins + 1)
    p = np.histogram(np.arange(n_samples + 1), edges)[0] / (n_samples + 1)
    return edges, p


def rank_uniformity(ranks: np.ndarray, n_samples: int, bins: int = 10) -> dict[str, float]:
    """Pearson chi2 of the rank histogram (``bins`` bins of whole ranks, :func:`rank_bins`)
    against uniform ranks, with its p-value."""
    edges, p = rank_bins(n_samples, bins)
    counts = np.histogram(ranks, edges)[0]
    expected = len(ranks) * p
    stat = float(((counts - expected) ** 2 / expected).sum())
    return {"chi2": stat, "ndf": bins - 1, "p_value": float(chi2.sf(stat, bins - 1))}


def _inside(ranks: np.ndarray, n_samples: int, level: float) -> np.ndarray:
    """Ranks whose ``u = (rank + 1/2) / (n_samples + 1)`` lies in the central ``level``."""
    return np.abs((ranks + 0.5) / (n_samples + 1) - 0.5) <= level / 2


def nominal_coverage(n_samples: int, level: float) -> float:
    """The coverage a calibrated posterior has under :func:`expected_coverage`'s rule with
    ``n_samples`` draws: the share of the ``n_samples + 1`` equally likely ranks inside the
    central ``level`` (e.g. 95 / 101 = 0.9406 at 95% with 100 draws, not 0.95)."""
    return float(_inside(np.arange(n_samples + 1), n_samples, level).mean())


def expected_coverage(ranks: np.ndarray, n_samples: int, levels: Sequence[float]) -> dict[str, dict]:
    """Empirical coverage of central credible intervals from SBC ranks (the truth inside the
    central ``level`` of the posterior draws), with binomial errors and the ``nominal`` value
    of a calibrated posterior for this number of draws (:func:`nominal_coverage`)."""
    out = {}
    for cl in levels:
        hits = _inside(np.asarray(ranks), n_samples, cl)
        p = float(hits.mean())
        out[f"{cl:g}"] = {"value": p, "error": float(np.sqrt(p * (1 - p) / len(hits))), "n": len(hits),
                          "nominal": nominal_coverage(n_samples, cl)}
    return out


def stream(npe: SetNPE, events: np.ndarray, steps: int, grid: np.ndarray) -> dict[str, np.ndarray]:
    """The posterior of one set updated in ``steps`` equal parts from the stored summary, and
    computed from all events at once: ``{"steps": (steps, F) log densities after each update,
    "all_at_once": (F,), "batch": (F,) (the padded-batch path, float32), "states": totals}``."""
    events = np.asarray(events, dtype=float)
    if len(events) < steps:
        raise DataError(f"{len(events)} events cannot be streamed in {steps} non-empty steps")
    theta = np.asarray(grid)[:, None]
    post = StreamingPosterior(npe)
    logs, totals = [], []
    for part in np.array_split(events, steps):
        post.update(part)
        logs.append(post.log_prob(theta))
        totals.append(post.state()["total"])
    once = StreamingPosterior(npe).update(events).log_prob(theta)
    batch = npe.log_posterior(events, np.array([len(events)]), theta)[0]
    return {"steps": np.array(logs), "all_at_once": once, "batch": batch, "states": np.array(totals)}


def compare_posteriors(densities: Mapping[str, np.ndarray], grid: np.ndarray, truth: np.ndarray,
                       levels: Sequence[float]) -> dict[str, dict]:
    """Per method (densities ``(S, F)`` on the same sets): mean credible width and coverage of
    the truth per level (binomial errors), mean posterior std and mean ``|mean - truth|``."""
    out = {}
    for name, dens in densities.items():
        summ = [summarise(grid, d, levels) for d in dens]
        entry: dict = {"sets": len(summ), "mean_std": float(np.mean([s.std for s in summ])),
                       "mean_abs_bias": float(np.mean([abs(s.mean - t) for s, t in zip(summ, truth)]))}
        for cl in levels:
            iv = np.array([s.intervals[cl] for s in summ])
            hits = (iv[:, 0] <= truth) & (truth <= iv[:, 1])
            p = float(hits.mean())
            entry[f"{cl:g}"] = {"mean_width": float(np.mean(iv[:, 1] - iv[:, 0])),
                                "coverage": p, "coverage_error": float(np.sqrt(p * (1 - p) / len(hits)))}
        out[name] = entry
    return out


#: Sets of the task's comparison of set, exact and per-event posteriors (at most).
COMPARISON_SETS = 50


def method_densities(npe: SetNPE, model: SetModel, events: np.ndarray, lengths: np.ndarray,
                     grid: np.ndarray) -> dict[str, np.ndarray]:
    """Posterior densities ``(B, F)`` per method on the same sets: ``set`` (the NPE) and, where
    the model has them, ``exact`` (hierarchical) and ``per_event`` (product of per-event
    posteriors)."""
    out = {"set": posterior_grid(npe, events, lengths, grid)}
    sets = np.split(events, np.cumsum(lengths)[:-1])
    for name, method in (("exact", "exact_posterior"), ("per_event", "per_event_posterior")):
        if hasattr(model, method):
            out[name] = np.array([getattr(model, method)(x, grid) for x in sets])
    return out


def infer_posterior(npe: SetNPE, model: SetModel, cfg: SetsConfig,
                    observed: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    """The observed set's posterior by method, its streaming check, SBC and the comparison of
    methods on ``min(cfg.sbc_sets, 50)`` prior sets (``cfg``: the ``sets`` section). Returns a
    JSON-able result and the arrays for plots."""
    lo, hi = model.poi_range
    grid = np.linspace(lo, hi, 401)[1:-1]
    obs = method_densities(npe, model, observed, np.array([len(observed)]), grid)
    result: dict = {"poi": model.poi_name, "truth": list(cfg.truth), "observed_events": len(observed),
                    "levels": list(cfg.levels),
                    "observed": {n: _summary_json(summarise(grid, d[0], cfg.levels)) for n, d in obs.items()}}
    arrays: dict[str, np.ndarray] = {"grid": grid, **{f"observed_{n}": d[0] for n, d in obs.items()}}
    if getattr(npe.encoder, "streamable", False):
        st = stream(npe, observed, cfg.stream_steps, grid)
        result["streaming"] = {"steps": cfg.stream_steps,
                               "max_abs_diff_log_density": float(np.abs(st["steps"][-1] - st["all_at_once"]).max()),
                               "max_abs_diff_vs_batch": float(np.abs(st["all_at_once"] - st["batch"]).max())}
        arrays.update(stream_steps=st["steps"], stream_once=st["all_at_once"])
    ranks, _ = sbc_ranks(npe, model, cfg.sbc_sets, cfg.sbc_samples, cfg.seed + 1000, cfg.observed_size)
    coverage = expected_coverage(ranks, cfg.sbc_samples, (0.1, 0.3, 0.5, 0.6827, 0.8, 0.9, 0.95))
    result["sbc"] = {"sets": cfg.sbc_sets, "samples": cfg.sbc_samples,
                     "uniformity": rank_uniformity(ranks, cfg.sbc_samples), "expected_coverage": coverage}
    arrays["ranks"] = ranks
    n = min(cfg.sbc_sets, COMPARISON_SETS)
    theta, events, lengths = simulate_sets(model, n, cfg.seed + 2000, cfg.observed_size)
    dens = method_densities(npe, model, events, lengths, grid)
    result["comparison"] = compare_posteriors(dens, grid, theta[:, 0], cfg.levels)
    arrays["comparison_truth"] = theta[:, 0]
    for name, d in dens.items():  # central credible intervals at the first level, per set
        arrays[f"intervals_{name}"] = np.array([credible_interval(grid, row, cfg.levels[0]) for row in d])
    return result, arrays


def _summary_json(s: PosteriorSummary) -> dict:
    intervals = {f"{cl:g}": list(iv) for cl, iv in s.intervals.items()}
    return {"mean": s.mean, "std": s.std, "intervals": intervals}
