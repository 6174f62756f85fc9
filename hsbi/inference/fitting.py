"""One fitting interface: MIGRAD/HESSE/MINOS with an analytic gradient, batched Newton fits,
profile scans of the POI, pulls, impacts and correlations, for any :class:`Likelihood`.

A likelihood is a model's parameters (:class:`~hsbi.inference.model.ParameterSpace`) and
``nll_grad_hess(data, theta, rows)``: the NLL, its gradient and Hessian of datasets ``rows`` of a
batch ``data`` (anything with ``take(rows)`` and the global observables ``aux`` (B, P)), in
numpy. Two models implement it: the declared statistical model (:class:`DeclaredLikelihood`,
code-4 interpolation over ingested samples or a workspace's arrays, derivatives from the fused
kernels of :mod:`hsbi.inference.nll`) and the simulator models (:class:`hsbi.inference.mixture.MixtureLikelihood`: a mixture with a nuisance
the densities are conditioned on). Observed fits, scans, MINOS, impacts, toys' batched fits and
Wilks intervals of both go through the functions here; this module only minimises. Results are
frozen dataclasses keyed by parameter name. Nothing here imports torch: a portable workspace
(:mod:`hsbi.inference.workspace`) fits in a process without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import stats

from hsbi.inference.batched_fit import fit_batch
from hsbi.inference.model import ParameterSpace
from hsbi.inference.nll import DeclaredLikelihood

__all__ = ["DeclaredLikelihood", "FitResult", "Impact", "Likelihood", "ScanResult", "covariance", "crossing_edges",
           "fit", "fit_summary", "impacts", "level_key", "minos_intervals", "profile_interval", "profile_scan",
           "value_and_grad", "wilks_threshold"]

#: MIGRAD's tolerance (EDM goal 0.002 * tol * errordef); iminuit's default is 0.1
_TOL = 0.01


def wilks_threshold(level: float) -> float:
    """``t`` at which a one-POI profile-likelihood interval of ``level`` ends (chi2_1 quantile)."""
    return float(stats.chi2.ppf(level, 1))


class Likelihood(Protocol):
    """What the fitters need of a model: its parameters and, for datasets ``rows`` of ``data``
    (all by default) at ``theta`` (one row per dataset, (B, P), numpy), the NLL (B,), its
    gradient (B, P) and, with ``hessian``, its Hessian (B, P, P) (else None): numpy arrays, or
    CPU tensors the fitters read without a copy."""

    model: ParameterSpace

    def nll_grad_hess(self, data: Any, theta: np.ndarray, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False) -> tuple[Any, Any, Any]: ...


def value_and_grad(lik: Likelihood, data: Any, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """NLL and analytic gradient of the first dataset of ``data`` at ``theta`` (P,)."""
    value, grad, _ = lik.nll_grad_hess(data, np.asarray(theta, dtype=np.float64)[None],
                                       rows=np.zeros(1, dtype=np.int64), hessian=False)
    return float(np.asarray(value)[0]), np.array(grad[0], dtype=np.float64)


@dataclass(frozen=True)
class FitResult:
    names: tuple[str, ...]
    values: np.ndarray  # (P,)
    errors: np.ndarray  # (P,) HESSE (0 for fixed parameters)
    covariance: np.ndarray | None  # (P, P) or None without HESSE
    nll: float
    valid: bool
    fixed: tuple[str, ...] = ()
    calls: int = 0

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])

    def error(self, name: str) -> float:
        return float(self.errors[self.names.index(name)])

    @property
    def correlation(self) -> np.ndarray | None:
        if self.covariance is None:
            return None
        d = np.sqrt(np.clip(np.diag(self.covariance), 1e-300, None))
        return self.covariance / np.outer(d, d)


class _Cost:
    """NLL and gradient of one dataset for iminuit (memoised: MIGRAD asks for both at a point)."""

    errordef = 0.5

    def __init__(self, lik: Likelihood, data: Any) -> None:
        self.lik, self.data, self._last = lik, data, (None, 0.0, None)
        self.calls = 0

    def _eval(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if self._last[0] is None or not np.array_equal(self._last[0], theta):
            self.calls += 1
            value, grad = value_and_grad(self.lik, self.data, theta)
            self._last = (np.array(theta), value, grad)
        return self._last[1], self._last[2]

    def __call__(self, theta: np.ndarray) -> float:
        return self._eval(np.asarray(theta))[0]

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self._eval(np.asarray(theta))[1]


def _minuit(lik: Likelihood, data: Any, start: np.ndarray, fixed: Mapping[str, float]):  # -> Minuit, _Cost
    from iminuit import Minuit

    model = lik.model
    cost = _Cost(lik, data)
    m = Minuit(cost, np.asarray(start, dtype=float), grad=cost.grad, name=model.names)
    m.tol = _TOL
    m.strategy = 0  # started at the Newton minimum: no numerical Hessian (P^2 calls) needed
    for p in model.parameters:
        m.limits[p.name] = p.bounds
        m.errors[p.name] = 0.1 if p.sigma is None else 0.5 * p.sigma
        m.fixed[p.name] = p.fixed
    for name, value in fixed.items():
        m.values[name] = value
        m.fixed[name] = True
    return m, cost


def fit(lik: Likelihood, data: Any, fixed: Mapping[str, float] | None = None,
        start: np.ndarray | None = None, hesse: bool = True) -> FitResult:
    """The (conditional, with ``fixed``) maximum-likelihood fit of one dataset."""
    fixed = dict(fixed or {})
    start = lik.model.point(fixed) if start is None else np.array(start, dtype=float)
    for name, value in fixed.items():
        start[lik.model.index(name)] = value
    # Newton with the analytic Hessian first: MIGRAD then only confirms the minimum (at 50 NPs
    # it needs ~1,900 calls from the inits, a few dozen from there)
    held = np.isin(lik.model.names, list(fixed))
    newton = fit_batch(lik, data.take(np.zeros(1, dtype=np.int64)), start[None], held)
    m, cost = _minuit(lik, data, newton.theta[0], fixed)
    m.migrad()
    values, held = np.array(m.values), np.array(m.fixed)
    cov = covariance(lik, data, values, held) if hesse and m.valid else None
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if cov is not None else np.array(m.errors) * ~held
    return FitResult(lik.model.names, values, errors, cov, float(m.fval), bool(m.valid), tuple(fixed), cost.calls)


def covariance(lik: Likelihood, data: Any, theta: np.ndarray, held: np.ndarray) -> np.ndarray:
    """The inverse of the analytic Hessian at ``theta`` over the free parameters (rows and
    columns of ``held`` parameters are 0): HESSE's covariance without its P^2 numerical
    second derivatives (2,700 NLL calls at 50 NPs)."""
    _, _, hess = lik.nll_grad_hess(data, np.asarray(theta, dtype=np.float64)[None], rows=np.zeros(1, dtype=np.int64))
    free = ~np.asarray(held, dtype=bool)
    cov = np.zeros((len(theta), len(theta)))
    cov[np.ix_(free, free)] = np.linalg.pinv(np.asarray(hess[0], dtype=np.float64)[np.ix_(free, free)])
    return cov


@dataclass(frozen=True)
class ScanResult:
    poi: str
    values: np.ndarray  # (K,)
    t: np.ndarray  # (K,) 2 (NLL(mu, conditional) - NLL_min)
    nuisances: np.ndarray  # (K, P) the conditional fits
    valid: np.ndarray  # (K,)

    def interval(self, level: float) -> tuple[float, float]:
        """Edges where the scan crosses the Wilks threshold (linear interpolation; a grid edge
        when the scan stays below it)."""
        q, v, t = wilks_threshold(level), self.values, self.t
        k = int(np.argmin(t))
        lo = v[0] if (t[: k + 1] < q).all() else np.interp(q, t[: k + 1][::-1], v[: k + 1][::-1])
        hi = v[-1] if (t[k:] < q).all() else np.interp(q, t[k:], v[k:])
        return float(lo), float(hi)


def profile_scan(lik: Likelihood, data: Any, values: Sequence[float], best: FitResult | None = None) -> ScanResult:
    """``t(mu)`` at ``values`` of the POI, each conditional fit started from its neighbour's."""
    best = best or fit(lik, data, hesse=False)
    poi = lik.model.poi
    order = np.argsort(np.abs(np.asarray(values) - best[poi]))
    ts, thetas, valid = np.zeros(len(values)), np.zeros((len(values), len(best.values))), np.zeros(len(values), bool)
    for k in order:
        cond = fit(lik, data, {poi: float(values[k])}, start=_nearest(thetas, valid, values, k, best.values), hesse=False)
        ts[k], thetas[k], valid[k] = 2 * (cond.nll - best.nll), cond.values, cond.valid
    return ScanResult(poi, np.asarray(values, dtype=float), np.maximum(ts, 0.0), thetas, valid)


def _nearest(thetas: np.ndarray, valid: np.ndarray, values: Sequence[float], k: int, default: np.ndarray) -> np.ndarray:
    done = np.flatnonzero(valid)
    if len(done) == 0:
        return default
    j = done[np.argmin(np.abs(np.asarray(values)[done] - values[k]))]
    return thetas[j]


def minos_intervals(lik: Likelihood, data: Any, levels: Sequence[float], best: FitResult | None = None) -> dict[float, tuple[float, float, bool]]:
    """MINOS interval of the POI per level: ``(low, high, valid)``."""
    best = best or fit(lik, data)
    m, _ = _minuit(lik, data, best.values, {})
    m.migrad()
    out = {}
    for level in levels:
        m.minos(lik.model.poi, cl=level)
        me = m.merrors[lik.model.poi]
        val = m.values[lik.model.poi]
        out[level] = (float(val + me.lower), float(val + me.upper), bool(me.is_valid))
    return out


def profile_interval(lik: Likelihood, data: Any, level: float, best: FitResult, xtol: float = 1e-10
                     ) -> tuple[float, float]:
    """The POI's profile-likelihood interval at ``level`` to ``xtol``: the crossings of
    ``t(mu) = 2 (NLL(mu, theta_hat_hat) - NLL_min)`` with the chi2_1 quantile by Brent's method on
    conditional fits (a POI bound where ``t`` stays below it). Tighter than MINOS, which stops at
    MIGRAD's tolerance (~1e-4 of sigma): what comparisons with another fitter need."""
    poi, q = lik.model.poi, wilks_threshold(level)

    def excess(mu: float) -> float:
        return 2 * (fit(lik, data, {poi: mu}, start=best.values, hesse=False).nll - best.nll) - q

    return crossing_edges(excess, best[poi], best.error(poi), lik.model.parameters[lik.model.poi_index].bounds, xtol)


def crossing_edges(excess: Callable[[float], float], mu_hat: float, sigma: float, bounds: Sequence[float],
                   xtol: float = 1e-10) -> tuple[float, float]:
    """Below and above ``mu_hat`` (where ``excess`` is negative), the roots of ``excess`` by
    Brent's method, bracketed by steps from ``mu_hat`` of ``sigma`` (at least 1e-3) doubling until
    ``excess`` turns positive; a bound where it never does. Any fitter's profile interval
    (``excess(mu) = t(mu) - q``)."""
    from scipy.optimize import brentq

    def edge(sign: float) -> float:
        bound = bounds[1 if sign > 0 else 0]
        inner, step = mu_hat, max(sigma, 1e-3)
        while True:
            outer = float(np.clip(mu_hat + sign * step, *sorted((mu_hat, bound))))
            if excess(outer) > 0:
                return float(brentq(excess, *sorted((inner, outer)), xtol=xtol, rtol=1e-12))
            if outer == bound:
                return float(bound)
            inner, step = outer, 2 * step

    return edge(-1.0), edge(1.0)


@dataclass(frozen=True)
class Impact:
    name: str
    pull: float  # (alpha_hat - a) / sigma_prefit
    constraint: float  # post-fit error / pre-fit width
    prefit: tuple[float, float]  # delta mu_hat with the NP fixed at +- its pre-fit width
    postfit: tuple[float, float]  # ... at +- its post-fit error


def impacts(lik: Likelihood, data: Any, best: FitResult) -> list[Impact]:
    """Pulls, constraints and the pre-/post-fit impact of each constrained NP on the POI,
    ranked by the larger post-fit impact."""
    model, poi = lik.model, lik.model.poi
    aux = np.asarray(data.aux[0], dtype=np.float64)
    nps = [j for j, p in enumerate(model.parameters) if p.constrained and not p.fixed]
    # all 4 conditional fits per NP (pre-/post-fit width, up/down) as one batched Newton fit,
    # each started at the covariance's linear response to the shift (the conditional minimum of
    # the quadratic approximation: Newton then needs an iteration or two, not five or six)
    cov = best.covariance if best.covariance is not None else np.diag(best.errors**2)
    bounds = model.bounds
    starts, held = [], []
    for j in nps:
        p = model.parameters[j]
        for width in (p.sigma, best.errors[j]):
            for sign in (+1, -1):
                shift = float(np.clip(best.values[j] + sign * width, *p.bounds)) - best.values[j]
                start = best.values + (cov[:, j] / cov[j, j] * shift if cov[j, j] > 0 else 0.0)
                start = np.clip(start, bounds[:, 0], bounds[:, 1])
                start[j] = best.values[j] + shift
                starts.append(start)
                held.append(np.arange(len(start)) == j)
    rows = np.zeros(len(starts), dtype=np.int64)
    shifted = fit_batch(lik, data.take(rows), np.array(starts), np.array(held)).theta[:, model.poi_index]
    out = []
    for k, j in enumerate(nps):
        p, d = model.parameters[j], shifted[4 * k: 4 * k + 4] - best[poi]
        out.append(Impact(p.name, float((best.values[j] - aux[j]) / p.sigma), float(best.errors[j] / p.sigma),
                          (float(d[0]), float(d[1])), (float(d[2]), float(d[3]))))
    return sorted(out, key=lambda i: -max(abs(i.postfit[0]), abs(i.postfit[1])))


def level_key(level: float) -> str:
    """A confidence level as the results' key: 0.6827 -> "68.27", 0.95 -> "95"."""
    return f"{100 * level:.4g}".rstrip("0").rstrip(".")


def fit_summary(lik: Likelihood, data: Any, levels: Sequence[float], scan_points: int,
                log: Callable[[str], None] = print) -> dict:
    """The observed fit of the first dataset of ``data``: best fit (Newton, MIGRAD) with the
    analytic Hessian's errors, MINOS intervals of the POI per level, a profile scan over the
    largest of them (padded 15%, at most 41 points), pulls and impacts of the constrained NPs,
    correlations. A JSON-ready summary; the declared model's observed fit and a portable
    workspace's fit are both this one."""
    model = lik.model
    log(f"fit: {len(model.names)} parameters")
    best = fit(lik, data)
    log(f"fit: {model.poi} = {best[model.poi]:.4g} +- {best.error(model.poi):.3g} (valid: {best.valid}); MINOS")
    minos = minos_intervals(lik, data, levels, best)
    lo = min(v[0] for v in minos.values())
    hi = max(v[1] for v in minos.values())
    pad = 0.15 * (hi - lo)
    bounds = model.parameters[model.poi_index].bounds
    grid = np.linspace(max(bounds[0], lo - pad), min(bounds[1], hi + pad), min(41, scan_points))
    log(f"scan: {len(grid)} points")
    scan = profile_scan(lik, data, grid, best)
    log(f"impacts: {sum(p.constrained for p in model.parameters)} NPs")
    ranked = impacts(lik, data, best)
    return {
        "poi": model.poi,
        "parameters": list(model.names),
        "bounds": {p.name: list(p.bounds) for p in model.parameters},
        "best_fit": dict(zip(model.names, map(float, best.values))),
        "errors": dict(zip(model.names, map(float, best.errors))),
        "nll_min": best.nll,
        "valid": best.valid,
        "intervals": {"minos": {level_key(l): [v[0], v[1]] for l, v in minos.items()},
                      "minos_valid": {level_key(l): v[2] for l, v in minos.items()},
                      "scan": {level_key(l): list(scan.interval(l)) for l in levels}},
        "scan": {"values": scan.values.tolist(), "t": scan.t.tolist()},
        "impacts": [{"name": i.name, "pull": i.pull, "constraint": i.constraint, "prefit": list(i.prefit),
                     "postfit": list(i.postfit)} for i in ranked],
        "correlation": best.correlation.tolist() if best.correlation is not None else None,
    }
