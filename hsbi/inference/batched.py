"""Profile fits of many toys at once for models with one nuisance: the ``P = 1`` case of
:mod:`hsbi.inference.batched_nd` (polynomial per-event surrogates in ``u = (z - center) /
half_width`` at ``degree + 1`` Chebyshev nodes, batched Newton in torch) for a
``ComponentDensity`` and a :class:`~hsbi.inference.likelihood.Likelihood`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hsbi.data import Dataset
from hsbi.inference.batched_nd import (
    Basis,
    BatchedToys,
    Window,
    assemble,
    pool_sizes,
    pooled_toys,
    prepare,
    profile_t,
)
from hsbi.inference.likelihood import Likelihood
from hsbi.models.base import ComponentDensity, MixtureModel

__all__ = ["BatchedToys", "batched_t", "pool_toys", "pool_toys_and_expectation", "prepare_toys"]


def _scalar(density: ComponentDensity):
    """``log_components`` taking nuisance values ``(K, 1)``."""
    return lambda x, z: density.log_components(x, z[:, 0])


def _yields(lik: Likelihood):
    """``lik.yields`` taking nuisance values ``(K, 1)``."""
    return lambda z: lik.yields(z[:, 0])


def prepare_toys(
    density: ComponentDensity,
    lik: Likelihood,
    toys: Sequence[Dataset],
    center: float,
    half_width: float,
    nuisance_range: tuple[float, float],
    degree: int = 4,
) -> BatchedToys:
    """Evaluate the density at Chebyshev nodes of ``center +- half_width`` (clipped to
    ``nuisance_range`` within ``lik.nuisance_bounds``) for every toy's events and fit
    polynomials (exact at the nodes)."""
    window = Window.clipped([center], [half_width], [lik.nuisance_range(nuisance_range)])
    return prepare(_scalar(density), [t.x for t in toys], [t.weights for t in toys],
                   np.array([[t.aux] for t in toys], dtype=float), _yields(lik), window,
                   Basis.total_degree(1, degree), lik.mu_bounds, (lik.aux_term,))


def pool_toys(*args, **kwargs) -> BatchedToys:
    """Toys at ``(mu, nuisance)`` drawn from per-process pools whose surrogates are computed once:
    the toys of :func:`pool_toys_and_expectation` (same arguments), the expectation not built."""
    return pool_toys_and_expectation(*args, expectation=False, **kwargs)[0]


def pool_toys_and_expectation(
    density: ComponentDensity,
    lik: Likelihood,
    model: MixtureModel,
    mu: float,
    nuisance: float,
    n_expected: float,
    n_toys: int,
    seed: int,
    half_width: float,
    pool_factor: float = 20.0,
    degree: int = 4,
    expectation: bool = True,
) -> tuple[BatchedToys, BatchedToys | None]:
    """``n_toys`` toys at ``(mu, nuisance)`` drawn from per-process pools whose surrogates (over
    ``nuisance +- half_width``) are computed once, and the pools' expectation.

    Each process's pool holds ``pool_factor`` times its expected yield, simulated at the toy
    point; a toy takes ``n_c ~ Poisson(y_c)`` distinct events of each pool (a draw without
    replacement within a toy; toys overlap by about ``1 / pool_factor``). The auxiliary
    measurement is resampled per toy (``lik.aux_term``). Network evaluations drop by about
    ``n_toys / pool_factor``.

    The expectation is one dataset holding every pool event with weight ``y_c / pool size`` and
    the nuisance as its auxiliary measurement: the Asimov dataset of the distribution the toys are
    drawn from. Its fit tells the bias the toys share: what a finite pool (for a data-driven
    model, the finite held-out sample) and the estimator's own mismodelling do to every toy alike.

    The window is clipped to ``lik.nuisance_bounds`` (within the model's range): the toys are
    profiled over the same range as the observed ``t(mu)``."""
    window = Window.clipped([nuisance], [half_width], [lik.nuisance_range(model.nuisance_range)])
    basis = Basis.total_degree(1, degree)
    rng = np.random.default_rng(seed)
    yields = model.yields(n_expected, mu, nuisance)
    table, rows, _ = pooled_toys(
        _scalar(density), lambda r, proc, size: model.sample(r, proc, np.full(size, nuisance)),
        model.processes, yields, n_toys, rng, window, basis, pool_factor)
    aux = np.array([[lik.aux_term.sample(rng, nuisance)] for _ in range(n_toys)])
    common = (_yields(lik), window, basis, lik.mu_bounds, (lik.aux_term,))
    toys = assemble(table, rows, [None] * n_toys, aux, *common)
    if not expectation:
        return toys, None
    sizes = pool_sizes(yields, pool_factor)
    weights = np.concatenate([np.full(n, y / n) for y, n in zip(yields, sizes) if n])
    expected = assemble(table, [np.arange(len(table))], [weights], np.array([[nuisance]]), *common)
    return toys, expected


def batched_t(toys: BatchedToys, mu: float, mu_start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``t_mu`` of every toy and a flag for failed fits: ended on an edge of the nuisance window
    that is not one of its bounds, or stopped by the iteration limit."""
    return profile_t(toys, mu, mu_start)
