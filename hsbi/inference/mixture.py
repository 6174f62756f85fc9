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
the nuisance only at larger scales, so the width that sizes toy windows is the seed grid's).
Rows of a batch that share a dataset are evaluated in one density call over all their nuisance
values; tabulated rows (toys: one table each) all in one pass, their events concatenated and
the per-row sums taken by ``bincount``.

A dataset fitted many times (the observed data, the Asimov dataset, a toy) carries a :class:`Table`:
its per-event log densities computed once on the nuisance grid of its seed profile and
interpolated in ``z`` by a cubic spline (C2, so the stencil's parabola sees a smooth function;
error ``O(dz^4)`` between knots, ~1e-10 of a log density's variation at 240 knots); the fit
then makes no density call. Without it each Newton iteration, MIGRAD call and conditional fit
evaluated a trained ensemble in float64 at three nuisance values (a 10,000-event Asimov dataset:
minutes per fit).
"""

from __future__ import annotations

import itertools
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
    # on a bound, x + h - h may round an ulp outside it (a density refuses values off its range)
    return np.clip(points, lo, hi), (1 + s).astype(np.int64), d1, d2


@dataclass(frozen=True)
class MixtureParameters(ParameterSpace):
    """``mu`` and the nuisance, with their bounds and the nuisance's constraint width."""

    parameters: tuple[Parameter, ...]
    poi: str = "mu"


@dataclass(frozen=True)
class Table:
    """Per-event log densities of one dataset, ``log_components(x, zs)`` ``(K, n, C)`` on the
    increasing nuisance grid ``zs`` (K,), interpolated in the nuisance by a not-a-knot cubic
    spline. The spline is linear in the tabulated values, so it is kept as the grid's cardinal
    splines ``basis`` (one per knot: the spline through a unit value there; built once per grid)
    and ``values`` ``(K, M)``, of which this dataset's are the columns ``cols`` (datasets on one
    grid share both, :meth:`many`): a value at ``z`` is ``basis(z) @ values``, with no set-up
    per event. ``None`` from :meth:`of` where the grid has under 4 points or a log density is
    not finite (the density is then called)."""

    basis: CubicSpline
    values: np.ndarray
    cols: slice
    shape: tuple[int, int]  # (n, C)

    @classmethod
    def of(cls, zs: np.ndarray, comps: np.ndarray) -> Table | None:
        return cls.many(zs, comps, [0, np.shape(comps)[1]])[0]

    @classmethod
    def many(cls, zs: np.ndarray, comps: np.ndarray, offsets: Sequence[int]) -> list[Table | None]:
        """The tables of several datasets whose events are ``comps``' ``offsets[j]:offsets[j + 1]``."""
        zs, comps = np.asarray(zs, dtype=float), np.asarray(comps, dtype=float)
        K, _, C = comps.shape
        parts = list(itertools.pairwise(offsets))
        if K < 4 or not np.all(np.diff(zs) > 0):
            return [None] * len(parts)
        finite = np.isfinite(comps).all(axis=(0, 2))
        basis, values = CubicSpline(zs, np.eye(K), axis=0), comps.reshape(K, -1)
        return [cls(basis, values, slice(a * C, b * C), (b - a, C)) if finite[a:b].all() else None
                for a, b in parts]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """``(G, n, C)`` at the nuisance values ``z`` (G,) within the grid."""
        z = np.asarray(z, dtype=float)
        return (self.basis(z) @ self.values[:, self.cols]).reshape(len(z), *self.shape)


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

    def nll_grad_hess(self, data: MixtureData, theta: np.ndarray, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        rows = np.arange(data.batch) if rows is None else np.asarray(rows, dtype=np.int64)
        th = np.asarray(theta, dtype=np.float64)
        zs, at, d1, d2 = stencil(th[:, 1], self.step, *self.model.parameters[1].bounds)
        aux = data.aux[rows, 1].numpy()
        value, grad, hess = np.zeros(len(rows)), np.zeros((len(rows), 2)), np.zeros((len(rows), 2, 2))

        def evaluate(b: np.ndarray, comps: np.ndarray, w: np.ndarray, sizes: np.ndarray) -> None:
            value[b], grad[b], hess[b] = self._evaluate(comps, w, np.repeat(np.arange(len(b)), sizes), th[b],
                                                        zs[b], at[b], d1[b], d2[b], aux[b])

        tabulated = np.array([data.tables[r] is not None for r in rows], dtype=bool)
        for b in self._parts(np.flatnonzero(tabulated), [data.x[r] for r in rows]):  # one pass, all datasets
            sizes = np.array([len(data.x[rows[k]]) for k in b])
            evaluate(b, np.concatenate([data.tables[rows[k]](zs[k]) for k in b], axis=1),
                     np.concatenate([data.w[rows[k]] for k in b]), sizes)
        groups: dict[int, list[int]] = {}
        for k in np.flatnonzero(~tabulated):  # rows of one dataset: one density call
            groups.setdefault(id(data.x[rows[k]]), []).append(k)
        for members in groups.values():
            x, w = data.x[rows[members[0]]], data.w[rows[members[0]]]
            for b in self._parts(np.asarray(members), [x] * len(rows)):
                comps = np.asarray(self.density.log_components(x, zs[b].ravel()), dtype=float)
                comps = comps.reshape(len(b), 3, len(x), -1).transpose(1, 0, 2, 3).reshape(3, len(b) * len(x), -1)
                evaluate(b, comps, np.tile(w, len(b)), np.full(len(b), len(x)))
        as_t = lambda a: torch.from_numpy(a)
        return as_t(value), as_t(grad), as_t(hess) if hessian else None

    @staticmethod
    def _parts(rows: np.ndarray, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``rows`` in consecutive groups of at most :data:`_CHUNK` log densities (3 stencil
        points per event and process; at least one row each)."""
        out, current, size = [], [], 0
        for k in rows:
            n = 3 * xs[k].size
            if current and size + n > _CHUNK:
                out.append(np.asarray(current))
                current, size = [], 0
            current.append(k)
            size += n
        return out + ([np.asarray(current)] if current else [])

    def _evaluate(self, comps: np.ndarray, w: np.ndarray, seg: np.ndarray, theta: np.ndarray, zs: np.ndarray,
                  at: np.ndarray, d1: np.ndarray, d2: np.ndarray, aux: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Value (G,), gradient (G, 2) and Hessian (G, 2, 2) of G rows from the log densities
        ``comps`` (3, N, C) at their stencil points ``zs`` (G, 3) of the N events of all rows,
        event ``i`` of row ``seg[i]`` with weight ``w[i]`` (per-row sums: ``bincount``)."""
        G, mu = len(theta), theta[:, 0]
        a, b = (np.asarray(c, dtype=float).reshape(G, 3, -1) for c in self.extended.yields(zs.ravel()))
        m = comps.max(axis=(0, 2))  # (N,): one scale per event, the same at every stencil point
        e = np.exp(comps - m[None, :, None])
        A, B = np.einsum("kic,ikc->ki", e, a[seg]), np.einsum("kic,ikc->ki", e, b[seg])  # (3, N)
        lam = A + mu[seg] * B
        events, rows = np.arange(len(seg)), np.arange(G)
        lam0, B0 = lam[at[seg], events], B[at[seg], events]
        S = a.sum(-1) + mu[:, None] * b.sum(-1)  # (G, 3) total yields
        C = np.stack([self.extended.constraint_nll(zs[g], aux[g]) for g in range(G)])  # (G, 3)

        def per_row(v: np.ndarray) -> np.ndarray:
            return np.bincount(seg, weights=v * w, minlength=G)

        with np.errstate(divide="ignore", invalid="ignore"):
            log_lam = np.where(lam0 > 0, np.log(np.where(lam0 > 0, lam0, 1.0)), -np.inf)
            value = S[rows, at] - per_row(log_lam + m) + C[rows, at]
            r0 = B0 / lam0
            e1, e2 = d1[seg].T, d2[seg].T  # (3, N): each event's stencil weights
            lam1, lam2, B1 = (e1 * lam).sum(0), (e2 * lam).sum(0), (e1 * B).sum(0)
            q1 = lam1 / lam0
            grad = np.stack([b.sum(-1)[rows, at] - per_row(r0),
                             (d1 * S).sum(-1) - per_row(q1) + (d1 * C).sum(-1)], -1)
            h_mm = per_row(r0**2)
            h_mz = (d1 * b.sum(-1)).sum(-1) - per_row(B1 / lam0 - r0 * q1)
            h_zz = (d2 * S).sum(-1) - per_row(lam2 / lam0 - q1**2) + (d2 * C).sum(-1)
        hess = np.stack([np.stack([h_mm, h_mz], -1), np.stack([h_mz, h_zz], -1)], -2)
        bad = ~np.isfinite(value)
        value[bad] = np.inf
        return value, np.nan_to_num(grad), np.nan_to_num(hess)
