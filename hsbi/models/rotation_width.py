"""The Gaussian-rotation mixture with a second, background-shape nuisance (its width): a model
with two nuisances and an exact likelihood, for the batched multi-nuisance fits.

It does not follow the one-nuisance ``MixtureModel`` protocol (its nuisance is a vector), so it
is not in the model registry; ``hsbi.inference.batched_nd`` and the benchmarks use it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hsbi.models.gaussian_rotation import GaussianRotation

__all__ = ["RotationWidth"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class RotationWidth:
    """``p_s(x | z, s) = N(x; -m(z), I)``, ``p_b(x | z, s) = N(x; m(z), s^2 I)``,
    ``m(z) = r (cos z, sin z)``: nuisances ``nu = (z, s)``, the rotation angle and the background
    width (nominal ``s = 1``). ``mu`` is the signal fraction of a fixed expected total, as in
    :class:`~hsbi.models.GaussianRotation` (which this reduces to at ``s = 1``).

    Nuisance arrays have shape ``(K, 2)`` (angle, width).
    """

    radius: float = 2.0
    processes: tuple[str, ...] = ("signal", "background")
    n_features: int = 2
    nuisance_ranges: tuple[tuple[float, float], ...] = ((0.0, math.pi / 2), (0.5, 2.0))
    poi_range: tuple[float, float] = (0.0, 1.0)
    _rotation: GaussianRotation = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rotation", GaussianRotation(radius=self.radius))

    @property
    def n_nuisances(self) -> int:
        return len(self.nuisance_ranges)

    def _means_widths(self, nuisance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means ``(K, C, 2)`` and widths ``(K, C)`` for nuisance values ``(K, 2)``."""
        nu = np.asarray(nuisance, dtype=float).reshape(-1, 2)
        return self._rotation.means(nu[:, 0]), np.stack([np.ones(len(nu)), nu[:, 1]], axis=-1)

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Exact ``log p_c(x_i | nu_k)``: ``(K, n, C)`` for ``x (n, 2)``, ``nu (K, 2)``."""
        means, widths = self._means_widths(nuisance)
        diff = np.asarray(x, dtype=float)[None, :, None, :] - means[:, None, :, :]  # (K, n, C, 2)
        w = widths[:, None, :]
        return -0.5 * np.sum(diff**2, axis=-1) / w**2 - 2.0 * np.log(w) - _LOG_2PI

    def sample(self, rng: np.random.Generator, process: str, nuisance: np.ndarray) -> np.ndarray:
        """One event of ``process`` per row of ``nuisance (n, 2)``: ``(n, 2)``."""
        index = self.processes.index(process)
        means, widths = self._means_widths(nuisance)
        return means[:, index] + widths[:, index, None] * rng.standard_normal((len(means), 2))

    def yield_coefficients(self, n_expected: float, nuisance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``, each ``(K, C)``: yields ``a + mu b`` (independent of the nuisances)."""
        return self._rotation.yield_coefficients(n_expected, np.asarray(nuisance).reshape(-1, 2)[:, 0])

    def yields(self, n_expected: float, mu: float) -> np.ndarray:
        """Expected yield per process, ``(C,)``."""
        a, b = self.yield_coefficients(n_expected, np.zeros((1, 2)))
        return np.clip(a[0] + mu * b[0], 0.0, None)

    def sample_dataset(self, rng: np.random.Generator, mu: float, nuisance: np.ndarray,
                       n_expected: float) -> np.ndarray:
        """An extended dataset ``(n, 2)`` at ``nuisance (2,)``: Poisson counts per process."""
        counts = rng.poisson(self.yields(n_expected, mu))
        x = np.concatenate([self.sample(rng, p, np.tile(nuisance, (k, 1))) for p, k in zip(self.processes, counts)])
        return x[rng.permutation(len(x))]
