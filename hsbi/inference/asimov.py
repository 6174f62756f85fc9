"""Asimov datasets: the expected data as quadrature nodes weighted by expected counts."""

from __future__ import annotations

import numpy as np

from hsbi.data import Dataset
from hsbi.inference.profile import check_point
from hsbi.models.base import MixtureModel
from hsbi.models.quadrature import quadrature

__all__ = ["asimov_dataset"]


def asimov_dataset(
    model: MixtureModel, mu: float, nuisance: float, n_expected: float, points: int | None = None
) -> Dataset:
    """Midpoint-rule nodes over ``model.support()`` with weights ``lambda(x) dx``.

    Any fit to it returns the generating values; ``t_mu`` on it is the median expected test
    statistic, so its Wilks intervals are the expected intervals (Cowan et al., arXiv:1007.1727).
    The auxiliary measurement is the nuisance itself (the median of every constraint's
    distribution). ``points`` per feature defaults to 4000 in 1D and 220 in 2D. A data-driven
    model (``model.exact`` false) gives its events with their expected counts as weights.
    """
    check_point(model, mu, nuisance, "Asimov dataset")
    if not model.exact:  # a data-driven model: its events, weighted by their expected counts
        x, weights = model.expected_events(mu, nuisance, n_expected)
        return Dataset(x=x, aux=float(nuisance), weights=weights)
    x, cell = quadrature(model, points)
    yields = model.yields(n_expected, mu, nuisance)
    density = np.exp(model.log_components(x, np.array([nuisance]))[0]) @ yields
    keep = density > 1e-12 * density.max()
    return Dataset(x=x[keep], aux=float(nuisance), weights=density[keep] * cell)
