"""One fitting interface: MIGRAD/HESSE/MINOS with an analytic gradient, batched Newton fits,
profile scans of the POI, pulls, impacts and correlations, for any :class:`Likelihood`.

A likelihood is a model's parameters (:class:`~hsbi.inference.statmodel.ParameterSpace`) and
``nll_grad_hess(data, theta, rows)``: the NLL, its gradient and Hessian of datasets ``rows`` of a
batch ``data`` (anything with ``take(rows)`` and the global observables ``aux`` (B, P)). Two
models implement it: the declared statistical model (:class:`DeclaredLikelihood`, code-4
interpolation over ingested samples, derivatives from :mod:`hsbi.inference.derivatives`) and the
simulator models (:class:`hsbi.inference.mixture.MixtureLikelihood`: a mixture with a nuisance
the densities are conditioned on). Observed fits, scans, MINOS, impacts, toys' batched fits and
Wilks intervals of both go through the functions here; this module only minimises. Results are
frozen dataclasses keyed by parameter name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy import stats

from hsbi.inference.batched_fit import fit_batch
from hsbi.inference.derivatives import nll_grad, nll_grad_hess
from hsbi.inference.statmodel import DTYPE, Dataset, Normalisation, ParameterSpace, StatModel, nll

__all__ = ["DeclaredLikelihood", "FitResult", "Impact", "Likelihood", "ScanResult", "covariance", "fit", "impacts",
           "minos_intervals", "profile_scan", "value_and_grad", "wilks_threshold"]

#: MIGRAD's tolerance (EDM goal 0.002 * tol * errordef); iminuit's default is 0.1
_TOL = 0.01


def wilks_threshold(level: float) -> float:
    """``t`` at which a one-POI profile-likelihood interval of ``level`` ends (chi2_1 quantile)."""
    return float(stats.chi2.ppf(level, 1))


class Likelihood(Protocol):
    """What the fitters need of a model: its parameters and, for datasets ``rows`` of ``data``
    (all by default) at ``theta`` (one row per dataset, (B, P)), the NLL (B,), its gradient
    (B, P) and, with ``hessian``, its Hessian (B, P, P) (else None)."""

    model: ParameterSpace

    def nll_grad_hess(self, data: Any, theta: torch.Tensor, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


def value_and_grad(lik: Likelihood, data: Any, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """NLL and analytic gradient of the first dataset of ``data`` at ``theta`` (P,)."""
    with torch.no_grad():
        value, grad, _ = lik.nll_grad_hess(data, torch.as_tensor(np.asarray(theta, dtype=float)[None, :], dtype=DTYPE),
                                           rows=np.zeros(1, dtype=np.int64), hessian=False)
    return float(value[0]), grad[0].numpy()


@dataclass(frozen=True)
class DeclaredLikelihood:
    """The declared model and its normalisation samples (a :class:`Likelihood`); ``batch`` is
    the NLL of many datasets by the tensor expressions (autograd's reference)."""

    model: StatModel
    norms: tuple[Normalisation, ...]

    def nll_grad_hess(self, data: Dataset, theta: torch.Tensor, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        value, grad, hess = nll_grad_hess(self.model, self.norms, data, theta, rows=rows, reference=reference) \
            if hessian else (*nll_grad(self.model, self.norms, data, theta, rows=rows), None)
        return value, grad, hess

    def batch(self, data: Dataset, theta: torch.Tensor) -> torch.Tensor:
        return nll(self.model, self.norms, data, theta)

    def value_and_grad(self, data: Dataset, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """NLL and analytic gradient of the first dataset of ``data``."""
        return value_and_grad(self, data, theta)

    def value(self, data: Dataset, theta: np.ndarray) -> float:
        with torch.no_grad():
            return float(self.batch(data, torch.as_tensor(np.asarray(theta, dtype=float)[None, :], dtype=DTYPE))[0])


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

    def __init__(self, lik: Likelihood, data: Dataset) -> None:
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


def _minuit(lik: Likelihood, data: Dataset, start: np.ndarray, fixed: Mapping[str, float]):  # -> Minuit, _Cost
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


def fit(lik: Likelihood, data: Dataset, fixed: Mapping[str, float] | None = None,
        start: np.ndarray | None = None, hesse: bool = True) -> FitResult:
    """The (conditional, with ``fixed``) maximum-likelihood fit of one dataset."""
    fixed = dict(fixed or {})
    start = lik.model.point(fixed) if start is None else np.array(start, dtype=float)
    for name, value in fixed.items():
        start[lik.model.index(name)] = value
    # Newton with the analytic Hessian first: MIGRAD then only confirms the minimum (at 50 NPs
    # it needs ~1,900 calls from the inits, a few dozen from there)
    held = np.isin(lik.model.names, list(fixed))
    newton = fit_batch(lik, data.take(torch.zeros(1, dtype=torch.long)), start[None], held)
    m, cost = _minuit(lik, data, newton.theta[0], fixed)
    m.migrad()
    values, held = np.array(m.values), np.array(m.fixed)
    cov = covariance(lik, data, values, held) if hesse and m.valid else None
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if cov is not None else np.array(m.errors) * ~held
    return FitResult(lik.model.names, values, errors, cov, float(m.fval), bool(m.valid), tuple(fixed), cost.calls)


def covariance(lik: Likelihood, data: Dataset, theta: np.ndarray, held: np.ndarray) -> np.ndarray:
    """The inverse of the analytic Hessian at ``theta`` over the free parameters (rows and
    columns of ``held`` parameters are 0): HESSE's covariance without its P^2 numerical
    second derivatives (2,700 NLL calls at 50 NPs)."""
    t = torch.as_tensor(np.asarray(theta, dtype=float)[None], dtype=DTYPE)
    with torch.no_grad():
        _, _, hess = lik.nll_grad_hess(data, t, rows=np.zeros(1, dtype=np.int64))
    free = ~np.asarray(held, dtype=bool)
    cov = np.zeros((len(theta), len(theta)))
    cov[np.ix_(free, free)] = np.linalg.pinv(hess[0].numpy()[np.ix_(free, free)])
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


def profile_scan(lik: Likelihood, data: Dataset, values: Sequence[float], best: FitResult | None = None) -> ScanResult:
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


def minos_intervals(lik: Likelihood, data: Dataset, levels: Sequence[float], best: FitResult | None = None) -> dict[float, tuple[float, float, bool]]:
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


@dataclass(frozen=True)
class Impact:
    name: str
    pull: float  # (alpha_hat - a) / sigma_prefit
    constraint: float  # post-fit error / pre-fit width
    prefit: tuple[float, float]  # delta mu_hat with the NP fixed at +- its pre-fit width
    postfit: tuple[float, float]  # ... at +- its post-fit error


def impacts(lik: Likelihood, data: Dataset, best: FitResult) -> list[Impact]:
    """Pulls, constraints and the pre-/post-fit impact of each constrained NP on the POI,
    ranked by the larger post-fit impact."""
    model, poi = lik.model, lik.model.poi
    aux = data.aux[0].numpy()
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
    rows = torch.zeros(len(starts), dtype=torch.long)
    shifted = fit_batch(lik, data.take(rows), np.array(starts), np.array(held)).theta[:, model.poi_index]
    out = []
    for k, j in enumerate(nps):
        p, d = model.parameters[j], shifted[4 * k: 4 * k + 4] - best[poi]
        out.append(Impact(p.name, float((best.values[j] - aux[j]) / p.sigma), float(best.errors[j] / p.sigma),
                          (float(d[0]), float(d[1])), (float(d[2]), float(d[3]))))
    return sorted(out, key=lambda i: -max(abs(i.postfit[0]), abs(i.postfit[1])))
