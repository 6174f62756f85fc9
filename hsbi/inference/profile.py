"""Observed fits, asymptotic (Wilks) intervals, toys and the Neyman (profile) construction.

Observed and toy fits of simulator models minimise one likelihood
(:class:`~hsbi.inference.mixture.MixtureLikelihood`, log densities tabulated on the nuisance
grid of a :class:`~hsbi.inference.likelihood.ProfiledGrid` that seeds them) through one fitting
interface (:mod:`hsbi.inference.fitting`, :func:`~hsbi.inference.batched_fit.fit_batch`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import chi2

from hsbi.config import InferenceConfig
from hsbi.data import Dataset
from hsbi.exceptions import ConfigError, FitError
from hsbi.inference.likelihood import Likelihood, ProfiledGrid
from hsbi.models.base import ComponentDensity, MixtureModel
from hsbi.models.constraint import Constraint

__all__ = [
    "Interval",
    "ObservedFit",
    "ToyFits",
    "asymptotic_interval",
    "check_point",
    "critical_values",
    "fit_observed",
    "likelihood_from_config",
    "make_likelihood",
    "neyman_interval",
    "quantile_with_failed",
    "throw_toys",
    "toy_fits",
    "toy_statistics",
]

#: The finite-difference step of observed fits in the nuisance, in units of its width on the seed
#: grid (at least ``mixture.STEP`` of the range): see :mod:`hsbi.inference.mixture`.
STEP_WIDTHS = 0.1
#: Stands in for an infinite critical value in the interpolation (finite slopes, accepts all).
_ACCEPT_ALL = 1e300
#: Nuisance points of the refit over the whole bounds, for a toy whose window refit still
#: ended on an inner edge (as many as an observed fit's seed: ``fit_observed``'s default).
FULL_RANGE_POINTS = 241


@dataclass(frozen=True)
class Interval:
    """A confidence interval; ``open_low``/``open_high`` mark an edge stopped by a bound."""

    level: float
    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _inside(value: float, bounds: tuple[float, float]) -> bool:
    return bool(bounds[0] <= value <= bounds[1])


def check_point(model: MixtureModel, mu: float, nuisance: float, what: str) -> None:
    """Raise :class:`ConfigError` when ``(mu, nuisance)`` lies outside the model's ranges."""
    for name, value, bounds, label in (("mu", mu, model.poi_range, model.poi_label),
                                       ("nuisance", nuisance, model.nuisance_range, model.nuisance_label)):
        if not _inside(value, bounds):
            raise ConfigError(f"{what} requested at {name} = {value:g}, outside the model's range "
                              f"[{bounds[0]:g}, {bounds[1]:g}] of the {label}")


def make_likelihood(
    model: MixtureModel,
    n_expected: float,
    aux_sigma: float | None,
    mu_bounds: tuple[float, float] | None = None,
    *,
    constraint: str = "gaussian",
    nuisance_bounds: tuple[float, float] | None = None,
) -> Likelihood:
    """The extended likelihood of ``model`` (yields scaled by ``n_expected``).

    The nuisance has a ``constraint`` (gaussian, lognormal or none) of width ``aux_sigma``
    (``None``: none); ``mu_bounds`` and ``nuisance_bounds`` default to the model's ranges and
    must lie inside them."""
    ranges = {"POI": (mu_bounds, model.poi_range), "nuisance": (nuisance_bounds, model.nuisance_range)}
    for what, (bounds, full) in ranges.items():
        if bounds is not None and not (_inside(bounds[0], full) and _inside(bounds[1], full)):
            raise ConfigError(f"{what} bounds [{bounds[0]:g}, {bounds[1]:g}] outside the model's "
                              f"range [{full[0]:g}, {full[1]:g}]")
    return Likelihood(
        yields=lambda zs: model.yield_coefficients(n_expected, zs),
        mu_bounds=tuple(mu_bounds or model.poi_range),
        aux_sigma=aux_sigma,
        constraint=constraint,
        nuisance_bounds=tuple(nuisance_bounds or model.nuisance_range),
    )


def likelihood_from_config(inf: InferenceConfig, model: MixtureModel) -> Likelihood:
    """The likelihood an analysis config declares: ``inference.n_expected``, ``poi_bounds``,
    ``nuisance_bounds`` and the nuisance's ``constraint`` with ``constraint_sigma``."""
    return make_likelihood(model, inf.n_expected, inf.constraint_sigma, inf.poi_bounds,
                           constraint=inf.constraint, nuisance_bounds=inf.nuisance_bounds)


def _density_name(density: ComponentDensity) -> str:
    return getattr(density, "name", None) or type(density).__name__


def _check_start(
    name: str, comps: np.ndarray, zs: np.ndarray, lik: Likelihood, data: Dataset, processes: Sequence[str]
) -> None:
    """:class:`FitError` naming the density, the start point and the first offending event or
    process when the NLL is not finite there. The start point is the middle of the POI bounds
    and of the nuisance grid; NaN or +inf log densities count anywhere on the grid."""
    mu0, k0 = 0.5 * (lik.mu_bounds[0] + lik.mu_bounds[1]), len(zs) // 2
    bad = np.isnan(comps) | np.isposinf(comps)
    if bad.any():
        k, i, c = np.argwhere(bad)[0]
        raise FitError(
            f"{name}: the NLL is not finite at mu = {mu0:g}, nuisance = {zs[k]:g}: event {i} "
            f"(x = {np.array2string(data.x[i], precision=4)}) has log density {comps[k, i, c]} "
            f"for process '{processes[c]}'"
        )
    a, b = lik.yields(zs[k0 : k0 + 1])
    y = a[0] + mu0 * b[0]
    start = f"{name}: the NLL is not finite at the start point mu = {mu0:g}, nuisance = {zs[k0]:g}"
    if not (np.all(np.isfinite(y)) and np.all(y >= 0)):
        c = int(np.flatnonzero(~(np.isfinite(y) & (y >= 0)))[0])
        raise FitError(f"{start}: process '{processes[c]}' has the yield {y[c]:g}")
    with np.errstate(divide="ignore"):
        log_lam = logsumexp(comps[k0] + np.log(y), axis=-1)
    if not np.all(np.isfinite(log_lam)):
        i = int(np.flatnonzero(~np.isfinite(log_lam))[0])
        raise FitError(f"{start}: event {i} (x = {np.array2string(data.x[i], precision=4)}) has "
                       f"zero intensity (log densities {comps[k0, i].tolist()}, yields {y.tolist()})")
    if not np.isfinite(lik.constraint_nll(zs[k0], data.aux)):
        raise FitError(f"{start}: the {lik.constraint} constraint term is not finite for the "
                       f"auxiliary measurement {data.aux:g}")


def _sigma_from_curvature(zs: np.ndarray, nll: np.ndarray) -> float:
    if len(zs) < 3 or zs[0] == zs[-1]:
        return 0.0  # a fixed nuisance
    near = nll - nll.min() < 2.0
    if near.sum() < 3:
        return float(zs[1] - zs[0])
    curvature = np.polyfit(zs[near], nll[near], 2)[0]
    return float(1.0 / np.sqrt(2.0 * curvature)) if curvature > 0 else float(np.ptp(zs))


@dataclass(frozen=True)
class ObservedFit:
    """The observed fit of a simulator model through the one fitting interface
    (:mod:`hsbi.inference.fitting` on a :class:`~hsbi.inference.mixture.MixtureLikelihood`):
    Newton, then MIGRAD and the analytic Hessian's errors; ``t(mu)`` and ``nuisance_hat_hat(mu)``
    from conditional Newton fits, each started at the nuisance where the coarse ``seed`` grid
    profiles (the global search that also seeds the fit: several minima in the nuisance find
    the lowest)."""

    lik: object  # MixtureLikelihood
    data: object  # MixtureData of the one dataset
    best: object  # fitting.FitResult
    seed: ProfiledGrid
    #: the nuisance's width, mu profiled: the curvature of the seed grid's profile within 2 of its
    #: minimum (robust where a trained density is smooth only at larger scales than the Hessian's
    #: step; HESSE's error is ``best.error("nuisance")``); it sizes the toys' nuisance windows
    sigma_nuisance: float

    @property
    def mu_hat(self) -> float:
        return float(self.best.values[0])

    @property
    def nuisance_hat(self) -> float:
        return float(self.best.values[1])

    @property
    def nll_min(self) -> float:
        return float(self.best.nll)

    def conditional(self, mus: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """``(nuisance_hat_hat, NLL)`` at each ``mu`` of ``mus``: one batched Newton fit."""
        import torch

        from hsbi.inference.batched_fit import fit_batch

        mus = np.atleast_1d(np.asarray(mus, dtype=float))
        start = np.stack([mus, [self.seed.profile(mu)[0] for mu in mus]], -1)
        held = np.broadcast_to(np.array([True, False]), start.shape)
        cond = fit_batch(self.lik, self.data.take(torch.zeros(len(mus), dtype=torch.long)), start, held)
        return cond.theta[:, 1], cond.nll

    def scan(self, mus: Sequence[float]) -> np.ndarray:
        """``t(mu)`` at each of ``mus``."""
        return np.maximum(0.0, 2.0 * (self.conditional(mus)[1] - self.nll_min))

    def t(self, mu: float) -> float:
        """Profile likelihood ratio ``t_mu = 2 (NLL(mu, z_hat_hat) - NLL(mu_hat, z_hat))``."""
        return float(self.scan([mu])[0])

    def nuisance_hat_hat(self, mu: float) -> float:
        return float(self.conditional([mu])[0][0])


def fit_observed(
    density: ComponentDensity,
    lik: Likelihood,
    data: Dataset,
    nuisance_range: tuple[float, float] | None = None,
    points: int = 241,
    name: str | None = None,
) -> ObservedFit:
    """The observed fit of ``data`` (:class:`ObservedFit`) with the nuisance in
    ``nuisance_range`` within ``lik.nuisance_bounds`` (all of them when ``None``), seeded by the
    profile on a grid of ``points`` nuisance values over it; the grid's log densities, tabulated
    (:class:`~hsbi.inference.mixture.Table`), serve the fit, its scans and intervals.

    Raises :class:`FitError` naming the density (``name``), the start point and the first
    offending event or process when the NLL is not finite at the start."""
    from hsbi.inference.fitting import fit
    from hsbi.inference.mixture import MixtureData, MixtureLikelihood, Table

    zs = np.linspace(*lik.nuisance_range(nuisance_range), points)
    comps = density.log_components(data.x, zs)
    _check_start(name or _density_name(density), comps, zs, lik, data, density.processes)
    seed = lik.grid(comps, zs, data.aux, data.weights)
    mu0, z0, nll0, _ = seed.global_fit()
    if not np.isfinite(nll0):
        raise FitError("the NLL at the best fit is not finite: check the estimator's outputs")
    width = _sigma_from_curvature(zs, seed.mu_hat_per_z()[1])  # the nuisance's width on the grid
    mlik = MixtureLikelihood.of(density, lik, (zs[0], zs[-1]), data.aux, start=(mu0, z0),
                                step=STEP_WIDTHS * width)
    mdata = MixtureData.of([data], [Table.of(zs, comps)])  # the fit calls no density where tabulated
    best = fit(mlik, mdata, start=np.array([mu0, z0]))
    if not np.isfinite(best.nll):
        raise FitError("the NLL at the best fit is not finite: check the estimator's outputs")
    return ObservedFit(mlik, mdata, best, seed, width)


#: ``|t - q|`` at which an asymptotic interval's edge counts as found (an edge within ~1e-7 of the
#: POI's error: ``t`` is ~linear in ``mu`` there with slope ``2 sqrt(q) / sigma``)
WILKS_TOL = 1e-6


def asymptotic_interval(fit: ObservedFit, level: float) -> Interval:
    """Wilks interval ``{mu : t_mu < F^-1_chi2_1(level)}``: each edge by the secant of
    ``sqrt(t)`` over batched conditional fits from the Hessian's parabola
    (:func:`hsbi.inference.toys.wilks_intervals`, the declared model's coverage path too); a
    bound where ``t`` stays below the quantile there is an open edge. Root finding on ``t``
    where the secant does not converge."""
    from hsbi.inference.toys import wilks_intervals

    q = float(chi2.ppf(level, df=1))
    lo_b, hi_b = fit.lik.extended.mu_bounds
    low, high = wilks_intervals(fit.lik, fit.data, level, start=fit.best.values[None], tol=WILKS_TOL)[0]
    f = lambda mu: fit.t(mu) - q  # noqa: E731
    if not np.isfinite(low):
        low = lo_b if f(lo_b) < 0 else brentq(f, lo_b, fit.mu_hat, xtol=1e-7)
    if not np.isfinite(high):
        high = hi_b if f(hi_b) < 0 else brentq(f, fit.mu_hat, hi_b, xtol=1e-7)
    return Interval(level, float(low), float(high), bool(low <= lo_b), bool(high >= hi_b))


def throw_toys(
    model: MixtureModel,
    mu: float,
    nuisance: float,
    n_expected: float,
    aux_sigma: float | None,
    n_toys: int,
    seed: int,
    constraint: str = "gaussian",
) -> list[Dataset]:
    """Pseudo-datasets at ``(mu, nuisance)``; the auxiliary measurement is resampled from the
    ``constraint``'s distribution with width ``aux_sigma`` (``aux = nuisance`` without one).

    Raises :class:`ConfigError` when the point lies outside the model's ranges."""
    check_point(model, mu, nuisance, "toys")
    term = Constraint.of(constraint, aux_sigma)
    rng = np.random.default_rng(seed)
    toys = []
    for _ in range(n_toys):
        x = model.sample_dataset(rng, mu, nuisance, n_expected)
        toys.append(Dataset(x=x, aux=term.sample(rng, nuisance)))
    return toys


@dataclass(frozen=True)
class ToyFits:
    """Per toy ``t_mu`` and the conditional MLE of the nuisance at ``mu`` (both ``(n,)``, NaN
    where the fit failed); ``failed`` counts the failed fits."""

    t: np.ndarray
    nuisance_hat_hat: np.ndarray
    failed: int


def _fit_window(density: ComponentDensity, lik: Likelihood, toys: Sequence[Dataset], comps: np.ndarray,
                zs: np.ndarray, mu: float, bounds: tuple[float, float], center: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t_mu, z_hat_hat(mu), redo)`` of ``toys`` with the nuisance in the window ``zs`` (their
    log densities ``comps`` ``(K, sum n, C)`` there): global and conditional :func:`fit_batch`
    fits of all of them together (one row per toy, its log densities tabulated), each started
    where the toy's grid profile has its minimum. ``redo`` where a fit did not converge or its
    nuisance ends on an edge of the window that is not a nuisance bound (the minimum may lie
    beyond it); a fit on a bound is the constrained fit."""
    from hsbi.inference.batched_fit import fit_batch
    from hsbi.inference.mixture import MixtureData, MixtureLikelihood, Table

    offsets = np.cumsum([0] + [len(d.x) for d in toys])
    per_toy = [comps[:, offsets[j] : offsets[j + 1]] for j in range(len(toys))]
    glob0, z_hh0 = np.empty((len(toys), 2)), np.empty(len(toys))
    for j, (toy, c) in enumerate(zip(toys, per_toy)):
        grid = lik.grid(c, zs, toy.aux)  # the seed: its log densities are already computed
        glob0[j] = grid.global_fit()[:2]
        z_hh0[j] = grid.profile(mu)[0]
    # the step: a tenth of the grid spacing. The stencil reads the tabulated cubic spline, smooth
    # at any step (a trained density's noise enters at the knots' spacing, not divided by h^2 as
    # in direct density calls, which only a table-less window makes: under 4 points, -inf values;
    # so unlike fit_observed's tenth of sigma_z it needs no floor at the density's smooth scale); the
    # fit stops O(h^2) from the spline's minimum, its NLL O(h^4) above it. The constraint takes
    # each toy's aux (MixtureData.aux); ``center`` only sets the nuisance's pre-fit width.
    step = (zs[-1] - zs[0]) / (10 * max(1, len(zs) - 1))
    mlik = MixtureLikelihood.of(density, lik, (zs[0], zs[-1]), center, step=step)
    data = MixtureData.of(toys, Table.many(zs, comps, offsets))
    glob = fit_batch(mlik, data, glob0)
    cond = fit_batch(mlik, data, np.stack([np.full(len(toys), mu), z_hh0], -1), fixed=np.array([True, False]))
    with np.errstate(invalid="ignore"):  # inf - inf where both failed: redone below
        # NLL(mu) below the global minimum: the global fit missed the lowest point, t = 0 is right
        t = np.maximum(0.0, 2.0 * (cond.nll - glob.nll))
    edge = 1e-6 * (zs[-1] - zs[0])

    def inner(z: np.ndarray) -> np.ndarray:
        return ((z <= zs[0] + edge) & (zs[0] > bounds[0])) | ((z >= zs[-1] - edge) & (zs[-1] < bounds[1]))

    redo = (inner(glob.theta[:, 1]) | inner(cond.theta[:, 1]) | ~glob.converged | ~cond.converged
            | ~np.isfinite(glob.nll) | ~np.isfinite(cond.nll))
    return t, cond.theta[:, 1], redo


def _batches(toys: Sequence[Dataset], chunk_events: int) -> list[slice]:
    """Consecutive toys of at most ``chunk_events`` events together (at least one toy each)."""
    out, start = [], 0
    while start < len(toys):
        stop, n = start, 0
        while stop < len(toys) and (n == 0 or n + len(toys[stop].x) <= chunk_events):
            n += len(toys[stop].x)
            stop += 1
        out.append(slice(start, stop))
        start = stop
    return out


def toy_fits(
    density: ComponentDensity,
    lik: Likelihood,
    toys: Sequence[Dataset],
    mu: float,
    center: float,
    half_width: float,
    nuisance_range: tuple[float, float] | None = None,
    points: int = 11,
    chunk_events: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
) -> ToyFits:
    """``t_mu`` and ``z_hat_hat(mu)`` for each toy (see :class:`ToyFits`).

    Global and conditional fits through the one fitting interface (batched Newton,
    :func:`~hsbi.inference.batched_fit.fit_batch`, of a
    :class:`~hsbi.inference.mixture.MixtureLikelihood`), seeded by each toy's grid profile, with
    the nuisance in a window ``center +- half_width`` within ``nuisance_range`` and
    ``lik.nuisance_bounds`` on which the log densities are tabulated (``points`` values; one
    density call per batch of at most ``chunk_events`` events). A fit that did not converge or ends on an edge of the window that
    is not a bound is redone on a window three times wider, and one still there over the whole
    bounds (:data:`FULL_RANGE_POINTS` values), where no edge is inner; a toy that fails even
    there gives NaN and is counted (a quantile counts it as ``t = +inf``). Raises
    :class:`ConfigError` when ``mu`` or ``center`` lies outside the bounds, :class:`FitError` on
    non-finite log densities in the window.
    """
    lo, hi = lik.nuisance_range(nuisance_range)
    for what, value, bounds in (("mu", mu, lik.mu_bounds), ("nuisance", center, (lo, hi))):
        if not _inside(value, bounds):
            raise ConfigError(f"toys tested at {what} = {value:g}, outside the bounds "
                              f"[{bounds[0]:g}, {bounds[1]:g}]")

    def window(width: float, k: int) -> np.ndarray:
        return np.linspace(max(lo, center - width), min(hi, center + width), k)

    zs = window(half_width, points)
    refits = (window(3 * half_width, 3 * points), np.linspace(lo, hi, FULL_RANGE_POINTS))
    t, z_hh = np.full(len(toys), np.nan), np.full(len(toys), np.nan)
    for batch in _batches(toys, chunk_events):
        part = toys[batch]
        comps = density.log_components(np.concatenate([d.x for d in part]), zs)
        if not np.all(np.isfinite(comps) | np.isneginf(comps)):
            offsets = np.cumsum([0] + [len(d.x) for d in part])
            bad = int(np.argwhere(np.isnan(comps) | np.isposinf(comps))[0, 1])
            j = int(np.searchsorted(offsets, bad, side="right")) - 1
            _check_start(f"{_density_name(density)} (toy {batch.start + j})",
                         comps[:, offsets[j] : offsets[j + 1]], zs, lik, part[j], density.processes)
        t[batch], z_hh[batch], redo = _fit_window(density, lik, part, comps, zs, mu, (lo, hi), center)
        todo = batch.start + np.flatnonzero(redo)
        for wide in refits:  # as many events per density call as on the window (x values)
            again = []
            for sub in _batches([toys[i] for i in todo], chunk_events * len(zs) // len(wide)):
                rows, redone = todo[sub], [toys[i] for i in todo[sub]]
                comps = density.log_components(np.concatenate([d.x for d in redone]), wide)
                t[rows], z_hh[rows], redo = _fit_window(density, lik, redone, comps, wide, mu, (lo, hi), center)
                again.append(rows[redo])
            todo = np.concatenate(again, dtype=np.int64) if again else todo
        t[todo], z_hh[todo] = np.nan, np.nan
        if progress is not None:
            progress(batch.stop, len(toys))
    return ToyFits(t, z_hh, int(np.isnan(t).sum()))


def toy_statistics(*args: object, **kwargs: object) -> tuple[np.ndarray, int]:
    """``t_mu`` for each toy and the number of failed fits (NaN entries): :func:`toy_fits` (same
    arguments) without the nuisance's conditional MLEs."""
    fits = toy_fits(*args, **kwargs)
    return fits.t, fits.failed


def quantile_with_failed(t: np.ndarray, level: float) -> float:
    """The ``level`` quantile of ``t`` with failed fits (NaN) counted as ``t = +inf``: conservative
    (a failed toy can only raise a critical value), ``inf`` where the quantile falls among them."""
    finite = t[np.isfinite(t)]
    if len(finite) == len(t):
        return float(np.quantile(t, level))
    top = float(finite.max()) if len(finite) else 0.0
    value = float(np.quantile(np.where(np.isfinite(t), t, np.finfo(float).max), level))
    return value if value <= top else float("inf")


def critical_values(t: np.ndarray, levels: Sequence[float]) -> dict[str, dict[str, float]]:
    """CL-quantiles of ``t`` with a binomial (order-statistic) 1-sigma band; failed fits (NaN)
    count as ``t = +inf`` (:func:`quantile_with_failed`). ``value_failed_dropped``: the quantile
    without them, which shows what counting them changed."""
    full = np.sort(np.where(np.isnan(t), np.inf, t))
    good = full[np.isfinite(full)]
    n = len(full)
    out = {}
    for level in levels:
        spread = np.sqrt(n * level * (1 - level))
        lo_i = int(np.clip(np.floor(n * level - spread), 0, n - 1))
        hi_i = int(np.clip(np.ceil(n * level + spread), 0, n - 1))
        out[f"{level:g}"] = {
            "value": quantile_with_failed(t, level),
            "low": float(full[lo_i]),
            "high": float(full[hi_i]),
            "value_failed_dropped": float(np.quantile(good, level)) if len(good) else float("inf"),
        }
    return out


def neyman_interval(
    mu_grid: np.ndarray,
    critical: np.ndarray,
    t_obs: Callable[[float], float],
    level: float,
    points_per_cell: int = 10,
) -> Interval:
    """``{mu : t_obs(mu) <= c(mu)}`` with ``c`` interpolated linearly between grid points; an
    infinite critical value (most toys failed there) accepts its point."""
    critical = np.where(np.isfinite(critical), critical, _ACCEPT_ALL)
    fine = np.linspace(mu_grid[0], mu_grid[-1], (len(mu_grid) - 1) * points_per_cell + 1)
    c = np.interp(fine, mu_grid, critical)
    accepted = np.array([t_obs(mu) for mu in fine]) <= c
    if not accepted.any():
        raise FitError(
            f"no point of the Neyman grid [{mu_grid[0]:g}, {mu_grid[-1]:g}] is accepted at "
            f"{level:g} CL: widen inference.neyman.mu_min/mu_max"
        )
    idx = np.flatnonzero(accepted)
    g = lambda mu: t_obs(mu) - np.interp(mu, mu_grid, critical)  # noqa: E731

    def edge(i_in: int, i_out: int) -> float:
        return float(brentq(g, fine[i_in], fine[i_out], xtol=1e-7)) if g(fine[i_out]) > 0 else float(fine[i_out])

    low = edge(idx[0], idx[0] - 1) if idx[0] > 0 else float(fine[0])
    high = edge(idx[-1], idx[-1] + 1) if idx[-1] < len(fine) - 1 else float(fine[-1])
    return Interval(level, low, high, bool(idx[0] == 0), bool(idx[-1] == len(fine) - 1))
