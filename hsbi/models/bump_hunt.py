"""Hierarchical set models (arXiv:2306.12584): the bump hunt of the paper's code and the on/off
mixture as a simulator of whole datasets, with exact set-level likelihoods and posteriors.

A set model draws, per dataset (set), a parameter of interest ``poi`` and a nuisance
``nuisance`` from its prior and then the set's events. Parameters are arrays ``theta`` of shape
``(..., 2)``: ``(poi, nuisance)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hsbi.exceptions import DataError
from hsbi.models.on_off import OnOffMixture

__all__ = ["BumpHunt", "OnOffSets", "SET_MODELS", "SetModel", "build_set_model"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_normal(x: np.ndarray, mean: np.ndarray | float, sigma: float) -> np.ndarray:
    return -0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - _LOG_SQRT_2PI


class SetModel:
    """Interface of a hierarchical set model (see the module docstring)."""

    poi_name: ClassVar[str] = "poi"
    nuisance_name: ClassVar[str] = "nuisance"
    n_features: ClassVar[int] = 1
    parameters: ClassVar[tuple[str, ...]] = ()
    #: True when a set's size is part of the simulation (e.g. Poisson), False when it is chosen
    random_size: ClassVar[bool] = False
    #: True when ``log_likelihood(x, theta)`` is the exact set likelihood in (poi, nuisance)
    #: usable for profiling (False: the nuisance is a latent to integrate, see the posterior)
    exact_likelihood: ClassVar[bool] = False

    @property
    def poi_range(self) -> tuple[float, float]:
        """The prior's support of the POI."""
        raise NotImplementedError

    @property
    def nuisance_range(self) -> tuple[float, float]:
        """The prior's support of the nuisance (an interval holding all but a negligible
        fraction for an unbounded prior)."""
        raise NotImplementedError

    def sample_prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, 2)`` parameters ``(poi, nuisance)`` from the prior."""
        raise NotImplementedError

    def simulate(self, rng: np.random.Generator, theta: np.ndarray,
                 sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One set per row of ``theta`` ``(B, 2)``: events ``(sum n, D)`` one set after the
        other, and the set sizes ``(B,)`` (``sizes``: fixed sizes, for models whose size is
        not random)."""
        raise NotImplementedError

    def check_theta(self, theta: np.ndarray, what: str = "parameters") -> np.ndarray:
        """``theta`` as ``(..., 2)`` floats; :class:`DataError` outside the prior's support."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape[-1:] != (2,) or not np.all(np.isfinite(theta)):
            raise DataError(f"{what}: expected finite (poi, nuisance) pairs, shape (..., 2), "
                            f"got shape {theta.shape}")
        for j, (name, (lo, hi)) in enumerate(((self.poi_name, self.poi_range),
                                              (self.nuisance_name, self.nuisance_range))):
            bad = (theta[..., j] < lo) | (theta[..., j] > hi)
            if bad.any():
                value = float(theta[..., j][bad].flat[0])
                raise DataError(f"{what}: {name} = {value:g} outside the prior's support "
                                f"[{lo:g}, {hi:g}]")
        return theta


@dataclass(frozen=True)
class BumpHunt(SetModel):
    """The bump hunt of the hierarchical NSBI code: ``size`` events per set, background
    ``N(0, 1)``, signal ``N(m, signal_sigma)`` with the bump position ``m ~ N(m_mean, m_sigma)``
    drawn once per set (a latent parameter shared by the set's signal events) and the signal
    fraction ``f ~ U(0, 1)`` (the POI). Each event is signal with probability ``f``."""

    size: int = 100
    signal_sigma: float = 0.1
    m_mean: float = 1.0
    m_sigma: float = 2.0
    poi_name: ClassVar[str] = "f"
    nuisance_name: ClassVar[str] = "m"
    parameters: ClassVar[tuple[str, ...]] = ("size", "signal_sigma", "m_mean", "m_sigma")

    def __post_init__(self) -> None:
        for name in ("signal_sigma", "m_sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} = {getattr(self, name)!r}: expected a positive number")
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"size = {self.size!r}: expected an integer >= 1")

    @property
    def poi_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    @property
    def nuisance_range(self) -> tuple[float, float]:
        return (self.m_mean - 8 * self.m_sigma, self.m_mean + 8 * self.m_sigma)

    def sample_prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.stack([rng.uniform(0, 1, n), rng.normal(self.m_mean, self.m_sigma, n)], axis=1)

    def simulate(self, rng: np.random.Generator, theta: np.ndarray,
                 sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        theta = self.check_theta(np.atleast_2d(theta))
        sizes = np.full(len(theta), self.size) if sizes is None else np.asarray(sizes, dtype=np.int64)
        set_of = np.repeat(np.arange(len(theta)), sizes)
        signal = rng.uniform(size=len(set_of)) < theta[set_of, 0]
        x = np.where(signal, theta[set_of, 1] + self.signal_sigma * rng.standard_normal(len(set_of)),
                     rng.standard_normal(len(set_of)))
        return x[:, None], sizes

    def log_likelihood(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Exact ``log p(X | f, m) = sum_i log(f N(x_i; m, s) + (1 - f) N(x_i; 0, 1))`` for one
        set ``x`` ``(n, 1)`` at parameters ``theta`` ``(K, 2)``: ``(K,)``."""
        x = np.asarray(x, dtype=float).reshape(-1)
        f, m = theta[:, :1], theta[:, 1:]
        with np.errstate(divide="ignore"):
            return np.logaddexp(np.log(f) + _log_normal(x, m, self.signal_sigma),
                                np.log1p(-f) + _log_normal(x, 0.0, 1.0)).sum(1)

    def exact_posterior(self, x: np.ndarray, f_grid: np.ndarray) -> np.ndarray:
        """The hierarchical posterior ``p(f | X)``, ``m`` integrated over its prior, normalised
        on ``f_grid`` ``(F,)`` (trapezoid): ``(F,)``.

        Within ``8 signal_sigma`` of the events the ``m`` integral is a midpoint rule with step
        ``signal_sigma / 10`` (spectrally accurate for the Gaussian peaks, which are at least
        ``signal_sigma / sqrt(n)`` wide); outside it every signal density vanishes (< e^-32), the
        likelihood is ``prod_i (1 - f) N(x_i; 0, 1)`` and enters with its prior mass."""
        x = np.asarray(x, dtype=float).reshape(-1)
        if len(x) == 0:
            raise DataError("the set is empty: expected at least one event")
        s = self.signal_sigma
        m = np.arange(x.min() - 8 * s, x.max() + 8 * s + s / 20, s / 10)
        h = s / 10  # midpoint rule: node m_j stands for [m_j - h/2, m_j + h/2]
        from scipy.stats import norm  # here: importing scipy.stats costs every law command ~1.5 s

        prior = norm(self.m_mean, self.m_sigma)
        outside = prior.cdf(m[0] - h / 2) + prior.sf(m[-1] + h / 2)
        sig = _log_normal(x[None, :], m[:, None], s)  # (M, n)
        bkg = _log_normal(x, 0.0, 1.0)
        log_w = _log_normal(m, self.m_mean, self.m_sigma) + math.log(h)
        from scipy.special import logsumexp  # here, as scipy.stats below

        f_grid = np.asarray(f_grid, dtype=float)
        out = np.empty(len(f_grid))
        with np.errstate(divide="ignore"):
            for k in range(0, len(f_grid), 16):
                f = f_grid[k : k + 16, None, None]
                ll = np.logaddexp(np.log(f) + sig, np.log1p(-f) + bkg).sum(-1)  # (F, M)
                far = len(x) * np.log1p(-f[:, 0, 0]) + bkg.sum() + math.log(outside)
                out[k : k + 16] = np.logaddexp(logsumexp(ll + log_w, axis=1), far)
        return _normalise(out, f_grid)

    def per_event_posterior(self, x: np.ndarray, f_grid: np.ndarray) -> np.ndarray:
        """The product of per-event likelihoods with ``m`` integrated per event (what
        multiplying per-event estimates gives: each event its own ``m``), ``p(f)`` uniform:
        ``prod_i (f N(x_i; m_mean, sqrt(m_sigma^2 + s^2)) + (1 - f) N(x_i; 0, 1))``, normalised
        on ``f_grid``: ``(F,)``."""
        x = np.asarray(x, dtype=float).reshape(-1)
        if len(x) == 0:
            raise DataError("the set is empty: expected at least one event")
        width = math.hypot(self.m_sigma, self.signal_sigma)
        f = np.asarray(f_grid, dtype=float)[:, None]
        with np.errstate(divide="ignore"):
            ll = np.logaddexp(np.log(f) + _log_normal(x, self.m_mean, width),
                              np.log1p(-f) + _log_normal(x, 0.0, 1.0)).sum(1)
        return _normalise(ll, f_grid)


def _normalise(log_density: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``exp(log_density)`` normalised to unit trapezoid integral on ``grid``."""
    p = np.exp(log_density - np.max(log_density))
    return p / np.trapezoid(p, grid)


@dataclass(frozen=True)
class OnOffSets(SetModel):
    """The on/off mixture (:class:`~hsbi.models.on_off.OnOffMixture`, defaults s = 10, b = 50,
    tau = 1) as a set simulator: one extended dataset per set, ``n ~ Poisson(mu s + nu (1 + tau)
    b)``. The POI ``mu`` and nuisance ``nu`` are drawn uniformly from ``poi_prior`` and
    ``nuisance_prior`` (the training proposal; the exact likelihood needs no prior)."""

    poi_prior: tuple[float, float] = (0.0, 15.0)
    nuisance_prior: tuple[float, float] = (0.5, 1.5)
    mixture: OnOffMixture = OnOffMixture()
    poi_name: ClassVar[str] = "mu"
    nuisance_name: ClassVar[str] = "nu"
    random_size: ClassVar[bool] = True
    exact_likelihood: ClassVar[bool] = True
    parameters: ClassVar[tuple[str, ...]] = ("poi_prior", "nuisance_prior")

    def __post_init__(self) -> None:
        for name, full in (("poi_prior", self.mixture.poi_range),
                           ("nuisance_prior", self.mixture.nuisance_range)):
            lo, hi = getattr(self, name)
            if not full[0] <= lo < hi <= full[1]:
                raise ValueError(f"{name} = {[lo, hi]}: expected [low, high] inside the model's "
                                 f"range [{full[0]:g}, {full[1]:g}]")

    @property
    def poi_range(self) -> tuple[float, float]:
        return tuple(float(v) for v in self.poi_prior)

    @property
    def nuisance_range(self) -> tuple[float, float]:
        return tuple(float(v) for v in self.nuisance_prior)

    def sample_prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.stack([rng.uniform(*self.poi_prior, n), rng.uniform(*self.nuisance_prior, n)], axis=1)

    def simulate(self, rng: np.random.Generator, theta: np.ndarray,
                 sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        theta = self.check_theta(np.atleast_2d(theta))
        sets = [self.mixture.sample_dataset(rng, mu, nu, 1.0) for mu, nu in theta]
        lengths = np.array([len(s) for s in sets], dtype=np.int64)
        events = np.concatenate(sets) if len(sets) else np.zeros((0, 1))
        return events, lengths

    def expected_size(self, theta: np.ndarray) -> np.ndarray:
        """``Lambda(mu, nu) = mu s + nu (1 + tau) b`` for ``theta`` ``(..., 2)``."""
        m = self.mixture
        return theta[..., 0] * m.s + theta[..., 1] * (1 + m.tau) * m.b

    def log_likelihood(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Exact extended ``log L = -Lambda + sum_i log lambda(x_i)`` for one set ``(n, 1)`` at
        ``theta`` ``(K, 2)``: ``(K,)``."""
        comps = self.mixture.log_components(x, np.zeros(1))[0]  # (n, 2): signal, background
        m = self.mixture
        shift = comps.max(axis=1)
        dens = np.exp(comps - shift[:, None])  # (n, 2), the larger one 1: no underflow
        theta = np.asarray(theta, dtype=float)
        with np.errstate(divide="ignore"):
            lam = np.log(np.outer(theta[:, 0] * m.s, dens[:, 0])
                         + np.outer(theta[:, 1] * (1 + m.tau) * m.b, dens[:, 1])) + shift  # (K, n)
        return lam.sum(1) - self.expected_size(theta)


#: Hierarchical set models by the name used in configs (``sets.model``).
SET_MODELS = {"bump_hunt": BumpHunt, "on_off": OnOffSets}


def build_set_model(name: str, **kwargs: object) -> SetModel:
    """A registered set model by name (``kwargs``: its ``parameters``)."""
    if name not in SET_MODELS:
        raise KeyError(f"unknown set model {name!r}; known: {', '.join(sorted(SET_MODELS))}")
    return SET_MODELS[name](**kwargs)
