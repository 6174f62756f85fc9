"""Set-level profile likelihoods: scans on a (POI, nuisance) grid, Wilks and Neyman intervals,
toys and coverage, for a learned set likelihood (:class:`~hsbi.estimators.set_ratio.SetRatioNet`)
next to the exact one of a set model.

A *set likelihood* is anything with ``log_likelihood(events (n, D), theta (K, 2)) -> (K,)``
(up to terms free of ``theta``): a trained ``SetRatioNet`` or an exact ``OnOffSets``.
``t(mu) = 2 (max_{mu', nu} log L - max_nu log L(mu, nu))`` (``statistics.md``).

The grid scan (:func:`profile_set`) is the global search and the observed scan; the observed
fit (:func:`fit_set`) and the toys' ``t`` (:func:`toy_t_values`) go through the one fitting
interface (:mod:`hsbi.inference.fitting`, :func:`~hsbi.inference.batched_fit.fit_batch`) on a
:class:`SetFitLikelihood`, seeded by the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq
from scipy.stats import chi2

from hsbi.exceptions import DataError, FitError
from hsbi.inference.batched_fit import fit_batch
from hsbi.inference.likelihood import parabola_min
from hsbi.inference.profile import Interval, critical_values
from hsbi.models.bump_hunt import SetModel

__all__ = [
    "SetData",
    "SetFitLikelihood",
    "SetLikelihood",
    "SetProfile",
    "coverage_summary",
    "fit_grids",
    "fit_set",
    "fit_steps",
    "infer_set_profile",
    "interval_widths",
    "neyman_set_toys",
    "observed_set",
    "profile_set",
    "set_interval",
    "set_toys",
    "toy_seed",
    "toy_t_values",
    "toy_window",
]


class SetLikelihood(Protocol):
    def log_likelihood(self, events: np.ndarray, theta: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SetProfile:
    """The profile likelihood of one set on a POI grid (nuisance maximised per point, refined
    by a parabola): ``t`` ``(P,)``, the conditional MLE ``nuisance_hat`` ``(P,)`` and the global
    fit (``poi_hat``, ``nuisance_hat_global``); ``edge``: the global maximum lies on the grid's
    edge (the fit window was too small)."""

    poi: np.ndarray
    t: np.ndarray
    nuisance_hat: np.ndarray
    poi_hat: float
    nuisance_hat_global: float
    edge: bool

    @cached_property
    def _spline(self) -> CubicSpline:
        return CubicSpline(self.poi, self.t)

    def t_at(self, mu: float | np.ndarray) -> np.ndarray:
        """``t`` interpolated (cubic) between grid points, >= 0."""
        return np.maximum(self._spline(mu), 0.0)

    def nuisance_at(self, mu: float) -> float:
        return float(np.interp(mu, self.poi, self.nuisance_hat))


@dataclass(frozen=True)
class SetData:
    """Sets as a batch for the fitting interface: the events per set and, optionally, each
    set's finite-difference steps ``(B, 2)`` (None: the likelihood's); ``aux`` (B, 2) is NaN
    (the set likelihood carries its own constraints)."""

    events: tuple[np.ndarray, ...]
    steps: np.ndarray | None = None

    @property
    def aux(self):  # -> torch.Tensor
        import torch

        return torch.full((len(self.events), 2), float("nan"), dtype=torch.float64)

    @property
    def batch(self) -> int:
        return len(self.events)

    def take(self, rows) -> SetData:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        return SetData(tuple(self.events[r] for r in rows), None if self.steps is None else self.steps[rows])


@dataclass(frozen=True)
class SetFitLikelihood:
    """A set likelihood as a :class:`hsbi.inference.fitting.Likelihood` over ``(poi,
    nuisance)``: ``NLL = -log_likelihood``, its derivatives from the parabolas through a 3 x 3
    stencil of ``steps`` (or of the data's per-set steps; a set likelihood is a black box in its
    parameters; nine points per fit point, every row of a set in one call). The value is
    exact: the steps move where a fit stops by ``O(h^2)`` only."""

    model: object  # hsbi.inference.statmodel.ParameterSpace
    likelihood: SetLikelihood
    steps: tuple[float, float]

    @classmethod
    def of(cls, likelihood: SetLikelihood, names: tuple[str, str], poi_range: tuple[float, float],
           nuisance_range: tuple[float, float], start: tuple[float, float],
           steps: tuple[float, float]) -> SetFitLikelihood:
        """Over ``poi_range`` x ``nuisance_range``; ``names``: (POI, nuisance)."""
        from hsbi.inference.mixture import MixtureParameters
        from hsbi.inference.statmodel import Parameter

        params = (Parameter(names[0], "normfactor", tuple(map(float, poi_range)), float(start[0])),
                  Parameter(names[1], "nuisance", tuple(map(float, nuisance_range)), float(start[1])))
        return cls(MixtureParameters(params, names[0]), likelihood, tuple(float(h) for h in steps))

    def nll_grad_hess(self, data: SetData, theta, rows: np.ndarray | None = None, hessian: bool = True,
                      reference: bool = False):
        import torch

        from hsbi.inference.mixture import stencil

        rows = np.arange(data.batch) if rows is None else np.asarray(rows, dtype=np.int64)
        th = np.asarray(theta, dtype=np.float64)
        value, grad, hess = np.zeros(len(rows)), np.zeros((len(rows), 2)), np.zeros((len(rows), 2, 2))
        groups: dict[int, list[int]] = {}
        for b, r in enumerate(rows):
            groups.setdefault(id(data.events[r]), []).append(b)
        for members in groups.values():
            b = np.asarray(members)
            steps = self.steps if data.steps is None else data.steps[rows[b[0]]]
            pts = []
            for k, (lo, hi) in enumerate(self.model.bounds):
                points, at, d1, d2 = stencil(th[b, k], float(steps[k]), lo, hi)
                pts.append((points, np.eye(3)[at], d1, d2))
            (p0, v0, a0, c0), (p1, v1, a1, c1) = pts
            grid = np.stack(np.broadcast_arrays(p0[:, :, None], p1[:, None, :]), -1).reshape(-1, 2)
            f = -np.asarray(self.likelihood.log_likelihood(data.events[rows[b[0]]], grid), dtype=float)
            f = f.reshape(len(b), 3, 3)
            def mix(u: np.ndarray, v: np.ndarray, f: np.ndarray = f) -> np.ndarray:
                return np.einsum("gi,gij,gj->g", u, f, v)

            value[b] = mix(v0, v1)
            grad[b] = np.stack([mix(a0, v1), mix(v0, a1)], -1)
            hess[b] = np.stack([np.stack([mix(c0, v1), mix(a0, a1)], -1),
                                np.stack([mix(a0, a1), mix(v0, c1)], -1)], -2)
        bad = ~np.isfinite(value)
        value[bad] = np.inf
        as_t = torch.from_numpy
        return as_t(value), as_t(np.nan_to_num(grad)), as_t(np.nan_to_num(hess)) if hessian else None


def _grid(poi: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(poi, nuisance, indexing="ij"), axis=-1).reshape(-1, 2)


def profile_set(likelihood: SetLikelihood, events: np.ndarray, poi: np.ndarray,
                nuisance: np.ndarray) -> SetProfile:
    """Profile ``likelihood`` for one set over ``nuisance`` at each ``poi`` point (both grids
    sorted). Raises :class:`DataError` for an empty set, :class:`FitError` for non-finite
    values."""
    events = np.asarray(events, dtype=float)
    if len(events) == 0:
        raise DataError("the set is empty: expected at least one event")
    poi, nuisance = np.asarray(poi, dtype=float), np.asarray(nuisance, dtype=float)
    nll = -likelihood.log_likelihood(events.reshape(len(events), -1), _grid(poi, nuisance))
    nll = nll.reshape(len(poi), len(nuisance))
    if not np.all(np.isfinite(nll)):
        raise FitError("the set log-likelihood is not finite on the fit grid")
    fits = [parabola_min(nuisance, row) for row in nll]
    nu_hat = np.array([f[0] for f in fits])
    prof = np.array([f[1] for f in fits])
    mu_hat, best, edge = parabola_min(poi, prof)
    t = 2.0 * (prof - min(best, prof.min()))
    return SetProfile(poi, t, nu_hat, mu_hat, float(np.interp(mu_hat, poi, nu_hat)), edge)


def set_interval(profile: SetProfile, level: float) -> Interval:
    """Wilks interval ``{mu : t(mu) < F^-1_chi2_1(level)}`` (``open_*``: cut by the grid)."""
    q = float(chi2.ppf(level, df=1))
    f = lambda mu: float(profile.t_at(mu)) - q  # noqa: E731
    lo, hi, mid = profile.poi[0], profile.poi[-1], profile.poi_hat
    open_low, open_high = f(lo) < 0, f(hi) < 0
    low = lo if open_low else brentq(f, lo, mid, xtol=1e-6)
    high = hi if open_high else brentq(f, mid, hi, xtol=1e-6)
    return Interval(level, float(low), float(high), bool(open_low), bool(open_high))


#: finite-difference steps of the set fits, in units of each parameter's width
STEP_WIDTHS = 0.1


def fit_steps(likelihood: SetLikelihood, events: np.ndarray, profile: SetProfile,
              poi_range: tuple[float, float], nuisance_range: tuple[float, float]) -> tuple[float, float]:
    """The finite-difference steps of a set's fit: :data:`STEP_WIDTHS` of the POI's width (half
    the grid ``profile``'s 68.3% interval, at least 1e-6 of ``poi_range``) and of the nuisance's
    (its conditional curvature at the grid's best POI, on 41 points over ``nuisance_range``)."""
    from hsbi.inference.profile import _sigma_from_curvature

    events = np.asarray(events, dtype=float).reshape(len(events), -1)
    iv = set_interval(profile, 0.6827)
    sigma_poi = max(0.5 * (iv.high - iv.low), 1e-6 * np.ptp(poi_range))
    nus = np.linspace(*nuisance_range, 41)
    nll = -likelihood.log_likelihood(events, np.stack([np.full(41, profile.poi_hat), nus], -1))
    sigma_nu = _sigma_from_curvature(nus, nll) or float(np.ptp(nuisance_range))
    return STEP_WIDTHS * sigma_poi, STEP_WIDTHS * sigma_nu


def fit_set(likelihood: SetLikelihood, model: SetModel, events: np.ndarray, profile: SetProfile,
            levels: Sequence[float]) -> dict:
    """The observed fit of one set through the one fitting interface
    (:class:`SetFitLikelihood`: Newton, MIGRAD, HESSE, then MINOS of the POI per level), seeded
    by the grid ``profile`` (the global search), within the prior's ranges, with the steps of
    :func:`fit_steps`. Returns ``best_fit``, ``hesse``, ``minos`` (``[low, high]`` by level
    key, or a message where MINOS failed) and ``valid``."""
    from hsbi.inference.fitting import fit, minos_intervals

    events = np.asarray(events, dtype=float).reshape(len(events), -1)
    steps = fit_steps(likelihood, events, profile, model.poi_range, model.nuisance_range)
    start = (profile.poi_hat, float(np.clip(profile.nuisance_hat_global, *model.nuisance_range)))
    lik = SetFitLikelihood.of(likelihood, (model.poi_name, model.nuisance_name), model.poi_range,
                              model.nuisance_range, start, steps)
    data = SetData((events,))
    best = fit(lik, data, start=np.array(start))
    out = {"best_fit": dict(zip(best.names, map(float, best.values))),
           "hesse": dict(zip(best.names, map(float, best.errors))), "valid": bool(best.valid), "minos": {}}
    for cl, (low, high, ok) in minos_intervals(lik, data, levels, best).items():
        out["minos"][f"{100 * cl:.0f}"] = [low, high] if ok else f"MINOS invalid: {[low, high]}"
    return out


def set_toys(model: SetModel, theta: Sequence[float], n: int, seed: int) -> list[np.ndarray]:
    """``n`` sets simulated at ``theta = (poi, nuisance)`` (refused outside the prior)."""
    rng = np.random.default_rng(seed)
    events, lengths = model.simulate(rng, np.tile(np.asarray(theta, dtype=float), (n, 1)))
    return np.split(events, np.cumsum(lengths)[:-1])


#: a fitted POI this close to a window's edge (relative to its width) is on it (as batched_fit)
_EDGE = 1e-6
#: toys fitted as one batch (and per progress report)
TOY_BATCH = 100


def toy_t_values(likelihood: SetLikelihood, toys: Sequence[np.ndarray], mu: float,
                 poi: np.ndarray, nuisance: np.ndarray,
                 progress: Callable[[int, int], None] | None = None,
                 model: SetModel | None = None) -> tuple[np.ndarray, int]:
    """``t(mu)`` per toy through the one fitting interface: each toy's grid profile on the
    window ``poi`` x ``nuisance`` (the global search) seeds a global and a conditional (POI
    held at ``mu``) :func:`~hsbi.inference.batched_fit.fit_batch` of a :class:`SetFitLikelihood`
    bounded by the window (steps of :func:`fit_steps` per toy), :data:`TOY_BATCH` toys per
    batch; ``t = max(0, 2 (NLL_cond - NLL_glob))``. A toy is failed (NaN; counted, never
    dropped) where its global maximum, on the grid or after the fit, lies on an inner edge of
    the window (not a bound of ``model``'s prior; without ``model`` every edge: the window was
    too small) or a fit did not converge. ``progress(done, total)`` after every 100 toys."""
    poi, nuisance = np.asarray(poi, dtype=float), np.asarray(nuisance, dtype=float)
    if not poi[0] <= mu <= poi[-1]:
        raise DataError(f"mu = {mu:g} outside the toy window [{poi[0]:g}, {poi[-1]:g}]")
    poi_range, nuisance_range = (poi[0], poi[-1]), (nuisance[0], nuisance[-1])
    prior = model.poi_range if model is not None else (-np.inf, np.inf)
    tol = _EDGE * (poi[-1] - poi[0])

    def inner_edge(x: np.ndarray) -> np.ndarray:
        return ((poi[0] > prior[0]) & (x <= poi[0] + tol)) | ((poi[-1] < prior[1]) & (x >= poi[-1] - tol))

    names = (model.poi_name, model.nuisance_name) if model is not None else ("poi", "nuisance")
    lik = SetFitLikelihood.of(likelihood, names, poi_range, nuisance_range, (mu, nuisance.mean()), (1.0, 1.0))
    t = np.full(len(toys), np.nan)
    for first in range(0, len(toys), TOY_BATCH):
        index = np.arange(first, min(first + TOY_BATCH, len(toys)))
        events = [np.asarray(toys[i], dtype=float).reshape(len(toys[i]), -1) for i in index]
        profiles = [profile_set(likelihood, x, poi, nuisance) for x in events]
        ok = np.array([not (p.edge and inner_edge(p.poi_hat)) for p in profiles], dtype=bool)
        if ok.any():
            sets = [(x, p) for x, p, good in zip(events, profiles, ok, strict=True) if good]
            steps = np.array([fit_steps(likelihood, x, p, poi_range, nuisance_range) for x, p in sets])
            data = SetData(tuple(x for x, _ in sets), steps)
            glob = fit_batch(lik, data, np.array([[p.poi_hat, p.nuisance_hat_global] for _, p in sets]))
            cond = fit_batch(lik, data, np.array([[mu, p.nuisance_at(mu)] for _, p in sets]),
                             fixed=np.array([True, False]))
            good = glob.converged & cond.converged & ~inner_edge(glob.theta[:, 0])
            t[index[ok][good]] = np.maximum(0.0, 2.0 * (cond.nll - glob.nll))[good]
        if progress is not None and (index[-1] + 1) % 100 == 0:
            progress(int(index[-1] + 1), len(toys))
    return t, int(np.isnan(t).sum())


def _binomial(hits: np.ndarray) -> dict[str, float]:
    p = float(np.mean(hits))
    return {"value": p, "error": float(np.sqrt(p * (1 - p) / len(hits))), "n": int(len(hits))}


def coverage_summary(t: np.ndarray, t_reference: np.ndarray, levels: Sequence[float]) -> dict:
    """Coverage of Wilks (``t < chi2 quantile``) and Neyman (``t < c``, ``c`` the level-quantile
    of ``t_reference``: toys at the truth) intervals with binomial errors, per level."""
    good = t[np.isfinite(t)]
    crit = critical_values(t_reference, levels)
    out = {}
    for cl in levels:
        c = crit[f"{cl:g}"]
        out[f"{100 * cl:.0f}"] = {
            "wilks": _binomial(good < chi2.ppf(cl, 1)),
            "neyman": _binomial(good < c["value"]),
            "critical_value": c,
            "within_2_sigma": {
                kind: bool(abs(_binomial(good < q)["value"] - cl) <= 2 * np.sqrt(cl * (1 - cl) / len(good)))
                for kind, q in (("wilks", chi2.ppf(cl, 1)), ("neyman", c["value"]))
            },
        }
    return out


def interval_widths(likelihoods: Mapping[str, SetLikelihood], sets: Sequence[np.ndarray],
                    poi: np.ndarray, nuisance: np.ndarray, level: float) -> dict[str, np.ndarray]:
    """Wilks interval ``[low, high]`` per set and likelihood: ``{name: (S, 2)}``."""
    out = {}
    for name, lik in likelihoods.items():
        rows = []
        for events in sets:
            iv = set_interval(profile_set(lik, events, poi, nuisance), level)
            rows.append((iv.low, iv.high))
        out[name] = np.array(rows)
    return out


#: Nuisance grid points of every set-level fit (parabolic refinement between them).
NUISANCE_POINTS = 25
#: Fewest successful toy fits at a grid point for which a critical value is quoted.
MIN_GOOD_TOYS = 10
#: Toy fits: POI window in observed sigma_poi either side of the tested value, and its points.
TOY_WINDOW_SIGMAS = 5.0
TOY_WINDOW_POINTS = 31


def toy_seed(base: int, mu: float, chunk: int = 0) -> int:
    """A seed that depends on the tested value and the chunk index only (not a grid index)."""
    return int(np.random.SeedSequence([base, int(round(mu * 1e9)), chunk]).generate_state(1)[0])


def observed_set(model: SetModel, truth: Sequence[float], seed: int,
                 size: int | None = None) -> np.ndarray:
    """The 'observed' set at ``truth`` (``size``: for models with a chosen size)."""
    rng = np.random.default_rng(seed)
    sizes = None if (size is None or model.random_size) else np.array([size])
    events, _ = model.simulate(rng, np.asarray([truth], dtype=float), sizes)
    return events


def fit_grids(model: SetModel, points: int,
              window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """POI grid (``points`` over ``window`` within the prior's range, or the whole range) and
    nuisance grid (:data:`NUISANCE_POINTS` over the prior's range)."""
    lo, hi = model.poi_range
    if window is not None:
        lo, hi = max(lo, window[0]), min(hi, window[1])
    return np.linspace(lo, hi, points), np.linspace(*model.nuisance_range, NUISANCE_POINTS)


def toy_window(model: SetModel, profile: SetProfile, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """The toy fit grid around ``mu``: +- :data:`TOY_WINDOW_SIGMAS` observed sigma_poi (the
    half-width of the observed 68.3% interval)."""
    iv = set_interval(profile, 0.6827)
    sigma = max(0.5 * (iv.high - iv.low), 1e-3)
    half = TOY_WINDOW_SIGMAS * sigma
    return fit_grids(model, TOY_WINDOW_POINTS, (mu - half, mu + half))


def neyman_set_toys(likelihoods: Mapping[str, SetLikelihood], model: SetModel,
                    profiles: Mapping[str, SetProfile], mu: float, n: int, seed: int,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """Per likelihood: ``n`` toys at ``(mu, nuisance_hat_hat(mu))`` of its observed profile,
    ``t(mu)`` of each and the failed fits: ``{name: {"t", "failed", "nuisance"}}``."""
    out = {}
    for name, lik in likelihoods.items():
        nu = float(np.clip(profiles[name].nuisance_at(mu), *model.nuisance_range))
        toys = set_toys(model, (mu, nu), n, seed)
        poi, nuisance = toy_window(model, profiles[name], mu)
        t, failed = toy_t_values(lik, toys, mu, poi, nuisance, progress, model)
        out[name] = {"t": t, "failed": failed, "nuisance": nu}
    return out


def infer_set_profile(likelihoods: Mapping[str, SetLikelihood], model: SetModel, observed: np.ndarray,
                      points: int, levels: Sequence[float],
                      toys: Sequence[tuple[float, Mapping[str, np.ndarray]]] = ()) -> dict:
    """Observed profile scans, Wilks intervals and (with ``toys``: ``(mu, {name: t})`` per
    Neyman grid point, all chunks) critical values and Neyman intervals, per likelihood.
    Returns a JSON-able result with the scans under ``"scans"``."""
    from hsbi.inference.profile import neyman_interval

    poi, nuisance = fit_grids(model, points)
    result: dict = {"poi": model.poi_name, "nuisance": model.nuisance_name, "observed_events": len(observed),
                    "levels": list(levels), "scans": {}}
    grid = sorted({mu for mu, _ in toys})
    for name, lik in likelihoods.items():
        prof = profile_set(lik, observed, poi, nuisance)
        fitted = fit_set(lik, model, observed, prof, levels)
        entry: dict = {"best_fit": fitted["best_fit"], "hesse": fitted["hesse"], "minos": fitted["minos"],
                       "fit_valid": fitted["valid"], "asymptotic": {}, "neyman": {}, "critical": {}}
        for cl in levels:  # the scan's crossings (the grid the toys and the Neyman inversion use)
            iv = set_interval(prof, cl)
            entry["asymptotic"][f"{100 * cl:.0f}"] = [iv.low, iv.high]
        if grid:
            t_by_mu = {mu: np.concatenate([t[name] for m, t in toys if m == mu]) for mu in grid}
            good = [mu for mu in grid if np.isfinite(t_by_mu[mu]).sum() >= MIN_GOOD_TOYS]
            entry["toys_per_point"] = [int(np.isfinite(t_by_mu[mu]).sum()) for mu in grid]
            entry["failed_fits"] = [int(np.isnan(t_by_mu[mu]).sum()) for mu in grid]
            crit = {mu: critical_values(t_by_mu[mu], levels) for mu in good}
            for cl in levels:
                c = [crit[mu][f"{cl:g}"]["value"] if mu in crit else None for mu in grid]
                entry["critical"][f"{100 * cl:.0f}"] = c
                if len(good) >= 2:
                    values = np.array([crit[mu][f"{cl:g}"]["value"] for mu in good])
                    iv = neyman_interval(np.array(good), values, lambda m, p=prof: float(p.t_at(m)), cl)
                    entry["neyman"][f"{100 * cl:.0f}"] = [iv.low, iv.high]
                else:
                    entry["neyman"][f"{100 * cl:.0f}"] = None  # fewer than 2 points with enough good toys
        result[name] = entry
        result["scans"][name] = {"poi": poi.tolist(), "t": prof.t.tolist()}
    result["neyman_grid"] = grid
    return result
