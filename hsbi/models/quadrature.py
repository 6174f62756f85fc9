"""Expected data of an exact model: quadrature nodes over its support and the Fisher matrix."""

from __future__ import annotations

import numpy as np

from hsbi.models.base import MixtureModel

__all__ = ["expected_fisher", "profiled_nuisance_width", "quadrature"]


def quadrature(model: MixtureModel, points: int | None = None) -> tuple[np.ndarray, float]:
    """Midpoint-rule nodes ``(N, D)`` over ``model.support()`` and the volume of one cell.

    ``points`` per feature defaults to 4000 in 1D and 220 in 2D."""
    box = model.support()
    points = points or (4000 if len(box) == 1 else 220)
    axes = [lo + (np.arange(points) + 0.5) * (hi - lo) / points for lo, hi in box]
    cell = float(np.prod([(hi - lo) / points for lo, hi in box]))
    x = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    return x, cell


def expected_fisher(
    model: MixtureModel, mu: float, nuisance: float, n_expected: float, points: int | None = None
) -> np.ndarray:
    """Fisher matrix ``(2, 2)`` in ``(mu, nuisance)`` of the extended likelihood, data alone.

    ``I_jk = int d_j lambda d_k lambda / lambda dx`` (a Poisson process with intensity
    ``lambda(x) = sum_c y_c(mu, z) p_c(x | z)``); ``d lambda / dz`` by a central difference
    (one-sided at an edge of the model's nuisance range)."""
    x, cell = quadrature(model, points)
    lo, hi = model.nuisance_range
    h = 1e-4 * (hi - lo)
    zs = np.array([max(lo, nuisance - h), nuisance, min(hi, nuisance + h)])
    a, b = model.yield_coefficients(n_expected, zs)  # (3, C)
    dens = np.exp(model.log_components(x, zs))  # (3, N, C)
    lam = np.einsum("knc,kc->kn", dens, a + mu * b)
    grad = np.stack([dens[1] @ b[1], (lam[2] - lam[0]) / (zs[2] - zs[0])])  # (2, N)
    keep = lam[1] > 1e-300
    return cell * (grad[:, keep] / lam[1, keep]) @ grad[:, keep].T


def profiled_nuisance_width(fisher: np.ndarray) -> float:
    """The nuisance's Fisher width with ``mu`` profiled, ``1 / sqrt(I_zz - I_zmu^2 / I_mumu)``;
    infinite when the matrix is singular (the data do not determine the nuisance)."""
    i_mm, i_mz, i_zz = fisher[0, 0], fisher[0, 1], fisher[1, 1]
    info = i_zz - (i_mz**2 / i_mm if i_mm > 0 else 0.0)
    return float(1.0 / np.sqrt(info)) if info > 1e-12 * max(i_zz, 1e-300) else float("inf")
