"""Asimov datasets: the expected data as quadrature nodes weighted by expected counts."""

from __future__ import annotations

import numpy as np

from hsbi.data import Dataset
from hsbi.models.base import MixtureModel

__all__ = ["asimov_dataset"]


def asimov_dataset(
    model: MixtureModel, mu: float, nuisance: float, n_expected: float, points: int | None = None
) -> Dataset:
    """Midpoint-rule nodes over ``model.support()`` with weights ``lambda(x) dx``.

    Any fit to it returns the generating values; ``t_mu`` on it is the median expected test
    statistic, so its Wilks intervals are the expected intervals (Cowan et al., arXiv:1007.1727).
    ``points`` per feature defaults to 4000 in 1D and 220 in 2D.
    """
    box = model.support()
    points = points or (4000 if len(box) == 1 else 220)
    axes = [lo + (np.arange(points) + 0.5) * (hi - lo) / points for lo, hi in box]
    cell = np.prod([(hi - lo) / points for lo, hi in box])
    x = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    yields = model.yields(n_expected, mu, nuisance)
    density = np.exp(model.log_components(x, np.array([nuisance]))[0]) @ yields
    keep = density > 1e-12 * density.max()
    return Dataset(x=x[keep], aux=float(nuisance), weights=density[keep] * cell)
