"""Extended unbinned NLL with yields linear in the POI, profiled over a constrained nuisance.

For a dataset ``{x_i}`` with event weights ``w_i`` (1 for real data; quadrature weights for
Asimov data), per-process log densities ``l_ic(z)`` (or log ratios to a fixed reference: the
difference cancels in every likelihood ratio), yields ``y_c(mu, z) = a_c(z) + mu b_c(z)`` and an
auxiliary measurement ``aux`` of the nuisance (``hsbi.models.constraint``: Gaussian of width
``sigma``, log-normal of relative width ``sigma``, or none):

    NLL(mu, z) = sum_c y_c - sum_i w_i log sum_c y_c exp(l_ic(z)) + C(z; aux)

with ``C = (z - aux)^2 / (2 sigma^2)`` (Gaussian), ``(log z - log aux)^2 / (2 sigma^2)``
(log-normal) or 0. ``mu`` is restricted to ``mu_bounds``, ``z`` to ``nuisance_bounds``.
The nuisance may change shapes (through ``l_ic(z)``), rates (through ``a(z), b(z)``) or both.

(``statistics.md``: extended NLL with constraint terms). Observed and toy fits minimise it
through the one fitting interface (:class:`hsbi.inference.mixture.MixtureLikelihood`). Here, the
grid profile (:class:`ProfiledGrid`), the global search that seeds them (and the density
checks' scan): NLL is convex in ``mu`` for fixed ``z``, so the POI is profiled by safeguarded Newton; the
nuisance by a grid with a parabola through the three lowest points (exact for a quadratic NLL;
grids are chosen a fraction of sigma_z apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hsbi.exceptions import ConfigError
from hsbi.models.constraint import Constraint

__all__ = ["Likelihood", "ProfiledGrid", "YieldFn", "parabola_min"]

#: ``yields(z)`` for nuisance values ``(K,)`` returns ``(a, b)``, each ``(K, C)``.
YieldFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def parabola_min(grid: np.ndarray, values: np.ndarray) -> tuple[float, float, bool]:
    """Minimum of ``values`` (``(K,)``) on ``grid`` refined by a parabola; ``at_edge`` flag."""
    k = int(np.argmin(values))
    if k == 0 or k == len(grid) - 1:
        return float(grid[k]), float(values[k]), True
    x0, x1, x2 = grid[k - 1 : k + 2]
    y0, y1, y2 = values[k - 1 : k + 2]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    if a <= 0:
        return float(x1), float(y1), False
    xm = float(np.clip(-b / (2 * a), x0, x2))
    c = y1 - a * x1**2 - b * x1
    return xm, float(a * xm**2 + b * xm + c), False


def _interval(bounds: tuple[float, float], what: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in bounds)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ConfigError(f"{what} {bounds!r}: expected finite [low, high] with low < high")
    return lo, hi


@dataclass(frozen=True)
class Likelihood:
    """The extended NLL's fixed ingredients: yields, POI bounds and the nuisance constraint.

    ``aux_sigma``: the constraint's width (``None``: the nuisance is free, constrained by the
    data alone); ``constraint``: ``"gaussian"`` (``aux_sigma`` absolute), ``"lognormal"``
    (``aux_sigma`` relative) or ``"none"`` (``aux_sigma`` becomes ``None``), see
    :class:`~hsbi.models.constraint.Constraint`; ``nuisance_bounds``: the nuisance's allowed
    range (``None``: whatever range a fit is given)."""

    yields: YieldFn
    mu_bounds: tuple[float, float]
    aux_sigma: float | None
    constraint: str = "gaussian"
    nuisance_bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        term = Constraint.of(self.constraint, self.aux_sigma)
        object.__setattr__(self, "constraint", term.kind)
        object.__setattr__(self, "aux_sigma", term.sigma)
        object.__setattr__(self, "mu_bounds", _interval(self.mu_bounds, "POI bounds"))
        if self.nuisance_bounds is not None:
            object.__setattr__(self, "nuisance_bounds", _interval(self.nuisance_bounds, "nuisance bounds"))

    @property
    def aux_term(self) -> Constraint:
        """The nuisance's auxiliary measurement (kind and width)."""
        return Constraint.of(self.constraint, self.aux_sigma)

    def constraint_nll(self, zs: np.ndarray, aux: float) -> np.ndarray:
        """The constraint term at nuisance values ``zs`` (``(K,)``) for the measurement ``aux``."""
        return self.aux_term.nll(zs, aux)

    def nuisance_range(self, requested: tuple[float, float] | None = None) -> tuple[float, float]:
        """``requested`` within ``nuisance_bounds`` (either alone when the other is ``None``)."""
        if requested is None and self.nuisance_bounds is None:
            raise ConfigError("the likelihood has no nuisance bounds: give the nuisance range to fit")
        lo, hi = requested if requested is not None else self.nuisance_bounds
        if self.nuisance_bounds is not None:
            lo, hi = max(lo, self.nuisance_bounds[0]), min(hi, self.nuisance_bounds[1])
        if lo > hi:
            raise ConfigError(f"nuisance range {requested!r} lies outside the nuisance bounds "
                              f"{self.nuisance_bounds!r}")
        return float(lo), float(hi)

    def grid(
        self, comps: np.ndarray, zs: np.ndarray, aux: float, weights: np.ndarray | None = None
    ) -> ProfiledGrid:
        """Precompute a dataset's terms on the nuisance grid ``zs`` (``comps``: ``(K, n, C)``)."""
        zs = np.asarray(zs, dtype=float)
        w = np.ones(comps.shape[1]) if weights is None else np.asarray(weights, dtype=float)
        a, b = self.yields(zs)
        m = comps.max(axis=-1)  # (K, n)
        e = np.exp(comps - m[..., None])
        constraint = self.constraint_nll(zs, aux)
        return ProfiledGrid(
            lik=self,
            zs=zs,
            A=np.einsum("knc,kc->kn", e, a),
            B=np.einsum("knc,kc->kn", e, b),
            w=w,
            sum_a=a.sum(axis=1),
            sum_b=b.sum(axis=1),
            offset=-(m * w).sum(axis=1) + constraint,
        )


@dataclass(frozen=True)
class ProfiledGrid:
    """One dataset on a nuisance grid: ``NLL(mu, z_k) = sum_a_k + mu sum_b_k
    - sum_i w_i log(A_ki + mu B_ki) + offset_k``."""

    lik: Likelihood
    zs: np.ndarray  # (K,)
    A: np.ndarray  # (K, n)
    B: np.ndarray  # (K, n)
    w: np.ndarray  # (n,)
    sum_a: np.ndarray  # (K,)
    sum_b: np.ndarray  # (K,)
    offset: np.ndarray  # (K,)

    def nll(self, mu: float) -> np.ndarray:
        """``NLL(mu, z_k)`` for every grid point, shape ``(K,)``."""
        lam = self.A + mu * self.B
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(lam > 0, np.log(np.where(lam > 0, lam, 1.0)), -np.inf)
        return self.sum_a + mu * self.sum_b - logs @ self.w + self.offset

    def profile(self, mu: float) -> tuple[float, float, bool]:
        """``(z_hat(mu), min_z NLL(mu, z), at_edge)``."""
        return parabola_min(self.zs, self.nll(mu))

    def mu_hat_per_z(self, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
        """Conditional MLE of ``mu`` at each grid point and its NLL: two ``(K,)`` arrays.

        Safeguarded Newton on the convex ``NLL(mu)``: a bracket from the derivative's sign,
        Newton steps inside it, bisection otherwise."""
        lo = np.full(len(self.zs), self.lik.mu_bounds[0], dtype=float)
        hi = np.full(len(self.zs), self.lik.mu_bounds[1], dtype=float)

        def derivs(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with np.errstate(divide="ignore", invalid="ignore"):  # at a bound lambda may be 0
                ratio = self.B / (self.A + mu[:, None] * self.B)
                return self.sum_b - ratio @ self.w, (ratio**2) @ self.w

        d_lo, _ = derivs(lo)
        d_hi, _ = derivs(hi)
        mu = np.where(d_lo >= 0, lo, np.where(d_hi <= 0, hi, 0.5 * (lo + hi)))
        interior = (d_lo < 0) & (d_hi > 0)
        for _ in range(iterations):
            d1, d2 = derivs(mu)
            lo = np.where(interior & (d1 < 0), mu, lo)
            hi = np.where(interior & (d1 > 0), mu, hi)
            delta = d1 / np.maximum(d2, 1e-300)
            step = mu - delta
            inside = (step >= lo) & (step <= hi)
            mu = np.where(interior, np.where(inside, step, 0.5 * (lo + hi)), mu)
            if np.all(np.abs(delta[interior]) < 1e-12 * np.maximum(1.0, np.abs(mu[interior]))):
                break
        lam = self.A + mu[:, None] * self.B
        nll = self.sum_a + mu * self.sum_b - np.log(lam) @ self.w + self.offset
        return mu, nll

    def global_fit(self) -> tuple[float, float, float, bool]:
        """``(mu_hat, z_hat, NLL_min, at_edge)`` over both parameters."""
        mus, nlls = self.mu_hat_per_z()
        z_hat, nll_min, at_edge = parabola_min(self.zs, nlls)
        mu_hat = float(np.interp(z_hat, self.zs, mus))
        return mu_hat, z_hat, min(nll_min, self.profile(mu_hat)[1]), at_edge
