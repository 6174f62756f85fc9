"""A simulator model's extended NLL as a :class:`~hsbi.inference.fitting.Likelihood`: the POI
``mu`` and the nuisance ``z`` the per-process densities are conditioned on, fitted by the same
functions as the declared model (``fitting.fit``, MINOS, scans, impacts, batched Newton).

For events ``x_i`` with weights ``w_i``, per-process log densities ``l_ic(z)`` (an exact model's,
or a trained ensemble's evaluated in float64), yields ``y_c = a_c(z) + mu b_c(z)`` and the
constraint ``C(z; aux)`` of :class:`~hsbi.inference.likelihood.Likelihood`::

    NLL(mu, z) = sum_c y_c - sum_i w_i log lambda_i + C(z; aux),  lambda_i = sum_c y_c exp(l_ic(z))

Derivatives in ``mu`` are analytic. The densities are black boxes in ``z`` (networks conditioned
on it, or numpy expressions), so ``lambda_i``, ``sum_c y_c`` and ``C`` are evaluated at three
nuisance values ``z - h, z, z + h`` (shifted inwards at a bound: one-sided there) and their
first and second derivatives in ``z`` taken from the parabola through them: ``O(h^2)``
truncation (``O(h)`` for the curvature on a bound). The value itself is exact, so the step only
moves where a fit stops, by ``O(h^2)``, and its NLL by ``O(h^4)``. ``h`` defaults to ``1e-4`` of
the nuisance range (relative error ~1e-8 for smooth densities; rounding ~1e-16 / h^2 ~ 1e-8 of
the curvature); :func:`hsbi.inference.profile.fit_observed` takes a tenth of the nuisance's
width where that is larger: a trained density's log values carry noise of ~1e-6 (float32
parts, spline knots), which the second difference divides by ``h^2`` (measured on the HiggsML
flow: at ``h = 1e-4`` of the range its curvature came out 36 times too large, the nuisance's
error 6 times too small; at a tenth of the width still 1.5 times: its log density is smooth in
the nuisance only at larger scales, so the width that sizes toy windows is the seed grid's). Rows of a batch that share a dataset are evaluated in one density
call over all their nuisance values.

A dataset fitted many times (the observed data, the Asimov dataset) carries a :class:`Table`:
its per-event log densities computed once on the nuisance grid of its seed profile and
interpolated in ``z`` by a cubic spline (C2, so the stencil's parabola sees a smooth function;
error ``O(dz^4)`` between knots, ~1e-10 of a log density's variation at 240 knots); the fit
then makes no density call. Without it each Newton iteration, MIGRAD call and conditional fit
evaluated a trained ensemble in float64 at three nuisance values (a 10,000-event Asimov dataset:
minutes per fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from hsbi.data import Dataset
from hsbi.inference.likelihood import Likelihood as Extended
from hsbi.inference.statmodel import DTYPE, Parameter, ParameterSpace
from hsbi.models.base import ComponentDensity

__all__ = ["STEP", "MixtureData", "MixtureLikelihood", "MixtureParameters", "Table", "stencil"]

#: the finite-difference step in the nuisance, as a fraction of its range
STEP = 1e-4
#: at most this many (nuisance value, event, process) log densities per density call
_CHUNK = 1 << 22


def stencil(x: np.ndarray, h: float, lo: float, hi: float) -> tuple[np.ndarray, ...]:
    """Three points (G, 3) around each ``x`` (G,) a step ``h`` apart, shifted inwards at a bound
    (one-sided there), the index (G,) of the point at ``x``, and the weights (G, 3) of the first
    and second derivative at ``x`` of the parabola through them; a fixed parameter (``lo ==
    hi``): three times ``x``, derivatives 0."""
    if hi > lo:  # s: where x sits in its stencil (-1, 0, +1)
        s = np.where(x - h < lo, -1.0, np.where(x + h > hi, 1.0, 0.0))
        d1 = np.stack([s - 0.5, -2 * s, s + 0.5], -1) / h
        d2 = np.tile(np.array([1.0, -2.0, 1.0]) / h**2, (len(x), 1))
    else:
        s, d1, d2 = np.zeros(len(x)), np.zeros((len(x), 3)), np.zeros((len(x), 3))
    points = (x - s * h)[:, None] + h * np.array([-1.0, 0.0, 1.0]) * (hi > lo)
    return points, (1 + s).astype(np.int64), d1, d2


@dataclass(frozen=True)
class MixtureParameters(ParameterSpace):
    """``mu`` and the nuisance, with their bounds and the nuisance's constraint width."""

    parameters: tuple[Parameter, ...]
    poi: str = "mu"


@dataclass(frozen=True)
class Table:
    """Per-event log densities of one dataset, ``log_components(x, zs)`` ``(K, n, C)`` on the
    increasing nuisance grid ``zs`` (K,), interpolated in the nuisance by a not-a-knot cubic
    spline; ``None`` from :meth:`of` where the grid is one point or a log density is not finite
    (the density is then called)."""

    spline: CubicSpline
    shape: tuple[int, int]  # (n, C)

    @classmethod
    def of(cls, zs: np.ndarray, comps: np.ndarray) -> Table | None:
        zs, comps = np.asarray(zs, dtype=float), np.asarray(comps, dtype=float)
        if len(zs) < 4 or not np.all(np.diff(zs) > 0) or not np.all(np.isfinite(comps)):
            return None
        return cls(CubicSpline(zs, comps.reshape(len(zs), -1), axis=0), comps.shape[1:])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """``(G, n, C)`` at the nuisance values ``z`` (G,) within the grid."""
        return self.spline(np.asarray(z, dtype=float)).reshape(len(z), *self.shape)


@dataclass(frozen=True)
class MixtureData:
    """A batch of B datasets of a simulator model: events and weights per dataset and the global
    observables ``aux`` (B, 2) (NaN for ``mu``; the nuisance's auxiliary measurement), and per
    dataset a :class:`Table` of its log densities or ``None``. ``take`` shares the event arrays:
    rows of the same dataset are evaluated together."""

    x: tuple[np.ndarray, ...]
    w: tuple[np.ndarray, ...]
    aux: torch.Tensor
    tables: tuple[Table | None, ...] = ()

    @classmethod
    def of(cls, datasets: Sequence[Dataset], tables: Sequence[Table | None] | None = None) -> MixtureData:
        x = tuple(np.asarray(d.x) for d in datasets)
        w = tuple(np.ones(len(d.x)) if d.weights is None else np.asarray(d.weights, dtype=float) for d in datasets)
        aux = torch.tensor([[np.nan, float(d.aux)] for d in datasets], dtype=DTYPE)
        return cls(x, w, aux, tuple(tables) if tables is not None else (None,) * len(x))

    @property
    def batch(self) -> int:
        return len(self.x)

    def take(self, rows: torch.Tensor | np.ndarray) -> MixtureData:
        rows = np.asarray(rows, dtype=np.int64)
        return MixtureData(tuple(self.x[r] for r in rows), tuple(self.w[r] for r in rows), self.aux[rows],
                           tuple(self.tables[r] for r in rows))


def _float64(density: ComponentDensity) -> ComponentDensity:
    """A trained ensemble in float64 (smooth in ``z`` at the finite-difference step: float32 is
    a step function at its 6e-8 resolution); an exact model as it is."""
    return density.astype(torch.float64) if hasattr(density, "astype") else density


@dataclass(frozen=True)
class MixtureLikelihood:
    """A simulator model's NLL over ``(mu, nuisance)`` (see the module docstring)."""

    model: MixtureParameters
    extended: Extended  # yields, POI bounds, constraint
    density: ComponentDensity
    step: float  # the finite-difference step in the nuisance

    @classmethod
    def of(cls, density: ComponentDensity, extended: Extended, nuisance_range: tuple[float, float],
           aux: float, start: tuple[float, float] | None = None, step: float | None = None) -> MixtureLikelihood:
        """``mu`` within the likelihood's POI bounds, the nuisance within ``nuisance_range``; the
        nuisance's pre-fit width is the constraint's (lognormal: relative to ``aux``; none:
        unconstrained); inits at ``start`` (default: the middle of ``mu``'s bounds, ``aux``);
        ``step`` at least :data:`STEP` of the range."""
        lo, hi = (float(v) for v in nuisance_range)
        term = extended.aux_term
        sigma = None if term.free else (term.sigma * aux if term.kind == "lognormal" else term.sigma)
        mu0, z0 = start if start is not None else (0.5 * sum(extended.mu_bounds), float(np.clip(aux, lo, hi)))
        params = (Parameter("mu", "normfactor", tuple(extended.mu_bounds), float(mu0)),
                  Parameter("nuisance", "nuisance", (lo, hi), float(z0), sigma, fixed=lo == hi))
        h = max(STEP * (hi - lo), step or 0.0)
        return cls(MixtureParameters(params), extended, _float64(density), min(h, 0.25 * (hi - lo)))

    def nll_grad_hess(self, data: MixtureData, theta: torch.Tensor, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        rows = np.arange(data.batch) if rows is None else np.asarray(rows, dtype=np.int64)
        th = theta.detach().to(DTYPE).numpy()
        value, grad, hess = np.zeros(len(rows)), np.zeros((len(rows), 2)), np.zeros((len(rows), 2, 2))
        groups: dict[int, list[int]] = {}
        for b, r in enumerate(rows):  # rows of one dataset: one density call
            groups.setdefault(id(data.x[r]), []).append(b)
        for members in groups.values():
            r = rows[members[0]]
            per_call = max(1, _CHUNK // max(1, 3 * data.x[r].size))
            for k in range(0, len(members), per_call):
                b = np.asarray(members[k : k + per_call])
                v, g, h = self._evaluate(data.x[r], data.w[r], th[b], data.aux[rows[b], 1].numpy(),
                                         data.tables[r])
                value[b], grad[b], hess[b] = v, g, h
        as_t = lambda a: torch.from_numpy(a)
        return as_t(value), as_t(grad), as_t(hess) if hessian else None

    def _evaluate(self, x: np.ndarray, w: np.ndarray, theta: np.ndarray, aux: np.ndarray,
                  table: Table | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Value (G,), gradient (G, 2) and Hessian (G, 2, 2) of one dataset at G points (its log
        densities from ``table`` where given, else from the density)."""
        mu, z = theta[:, 0], theta[:, 1]
        zs, at, d1, d2 = stencil(z, self.step, *self.model.parameters[1].bounds)
        G, n = len(z), len(x)
        comps = table(zs.ravel()) if table is not None else self.density.log_components(x, zs.ravel())
        comps = np.asarray(comps, dtype=float).reshape(G, 3, n, -1)
        a, b = (np.asarray(c, dtype=float).reshape(G, 3, -1) for c in self.extended.yields(zs.ravel()))
        m = comps.max(axis=(1, 3))  # (G, n): one scale per event, the same at every stencil point
        e = np.exp(comps - m[:, None, :, None])
        A, B = np.einsum("gkic,gkc->gki", e, a), np.einsum("gkic,gkc->gki", e, b)
        lam = A + mu[:, None, None] * B  # (G, 3, n)
        rows = np.arange(G)
        lam0, B0 = lam[rows, at], B[rows, at]
        S = a.sum(-1) + mu[:, None] * b.sum(-1)  # (G, 3) total yields
        C = np.stack([self.extended.constraint_nll(zs[g], aux[g]) for g in range(G)])  # (G, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_lam = np.where(lam0 > 0, np.log(np.where(lam0 > 0, lam0, 1.0)), -np.inf)
            value = S[rows, at] - np.sum((log_lam + m) * w, -1) + C[rows, at]
            r0 = B0 / lam0
            lam1, lam2 = np.einsum("gk,gki->gi", d1, lam), np.einsum("gk,gki->gi", d2, lam)
            B1 = np.einsum("gk,gki->gi", d1, B)
            q1 = lam1 / lam0
            grad = np.stack([b.sum(-1)[rows, at] - r0 @ w,
                             (d1 * S).sum(-1) - q1 @ w + (d1 * C).sum(-1)], -1)
            h_mm = (r0**2) @ w
            h_mz = (d1 * b.sum(-1)).sum(-1) - (B1 / lam0 - r0 * q1) @ w
            h_zz = (d2 * S).sum(-1) - (lam2 / lam0 - q1**2) @ w + (d2 * C).sum(-1)
        hess = np.stack([np.stack([h_mm, h_mz], -1), np.stack([h_mz, h_zz], -1)], -2)
        bad = ~np.isfinite(value)
        value[bad] = np.inf
        return value, np.nan_to_num(grad), np.nan_to_num(hess)
