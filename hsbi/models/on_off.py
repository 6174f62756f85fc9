"""The on/off mixture of the hierarchical NSBI code, with its exact likelihood."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hsbi.models.base import MixtureModel

__all__ = ["OnOffMixture"]


@dataclass(frozen=True)
class OnOffMixture(MixtureModel):
    """Intensity ``lambda(x) = mu s f_s(x) + nu (1 + tau) b f_b(x)`` in one feature.

    ``f_s = N(signal_mean, signal_sigma)``, ``f_b = N(background_mean, background_sigma)``; the
    POI ``mu`` scales the signal yield, the nuisance ``nu`` the background yield (free: the data
    constrain it). ``n_expected`` in the generic interface is a luminosity scale (1 = nominal).
    Reference (``statistics.md``): at ``mu = 6, nu = 1`` the Fisher ``sigma_mu`` is 0.853 with
    ``nu`` profiled, 0.844 with ``nu`` fixed.
    """

    s: float = 10.0
    b: float = 50.0
    tau: float = 1.0
    signal_mean: float = -7.0
    signal_sigma: float = 2.0
    background_mean: float = 0.0
    background_sigma: float = 3.0
    processes: tuple[str, ...] = ("signal", "background")
    n_features: int = 1
    nuisance_range: tuple[float, float] = (0.2, 3.0)
    poi_range: tuple[float, float] = (0.0, 40.0)
    poi_label: ClassVar[str] = "signal strength (signal yield / s)"
    nuisance_label: ClassVar[str] = "background normalisation nu"
    parameters: ClassVar[tuple[str, ...]] = (
        "s", "b", "tau", "signal_mean", "signal_sigma", "background_mean", "background_sigma",
    )

    def __post_init__(self) -> None:
        for name in ("s", "b", "signal_sigma", "background_sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} = {getattr(self, name)!r}: expected a positive number")
        if not self.tau >= 0:
            raise ValueError(f"tau = {self.tau!r}: expected a number >= 0")

    def _params(self) -> np.ndarray:
        return np.array([[self.signal_mean, self.signal_sigma],
                         [self.background_mean, self.background_sigma]])

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """``(K, n, 2)``: the shapes do not depend on ``nu``."""
        p = self._params()
        x = np.asarray(x, dtype=float).reshape(-1, 1)
        logpdf = -0.5 * ((x - p[:, 0]) / p[:, 1]) ** 2 - np.log(p[:, 1]) - 0.5 * math.log(2 * math.pi)
        return np.broadcast_to(logpdf, (len(np.atleast_1d(nuisance)), *logpdf.shape)).copy()

    def sample(self, rng: np.random.Generator, process: str, nuisance: np.ndarray) -> np.ndarray:
        mean, sigma = self._params()[self.processes.index(process)]
        return (mean + sigma * rng.standard_normal(len(np.atleast_1d(nuisance))))[:, None]

    def yield_coefficients(
        self, n_expected: float, nuisance: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        nu = np.atleast_1d(np.asarray(nuisance, dtype=float))
        a = np.stack([np.zeros_like(nu), nu * (1 + self.tau) * self.b], axis=1) * n_expected
        b = np.stack([np.full_like(nu, self.s), np.zeros_like(nu)], axis=1) * n_expected
        return a, b

    def support(self) -> list[tuple[float, float]]:
        p = self._params()
        return [(float((p[:, 0] - 8 * p[:, 1]).min()), float((p[:, 0] + 8 * p[:, 1]).max()))]
