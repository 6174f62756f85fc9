"""The Gaussian-rotation mixture of arXiv:2503.07962 (eq. 2, 6-7), with its exact likelihood."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hsbi.models.base import MixtureModel

__all__ = ["GaussianRotation"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GaussianRotation(MixtureModel):
    """Signal and background unit Gaussians in 2D, rotated by the nuisance angle ``z``.

    ``p_b(x | z) = N(x; ( r cos z,  r sin z), I)``, ``p_s(x | z) = N(x; (-r cos z, -r sin z), I)``.
    Convention: ``mu`` is the signal *fraction*, ``p = mu p_s + (1 - mu) p_b``, with a fixed
    expected total ``n_expected`` (so the event count carries no information on ``mu``).

    Arguments:
        radius: distance ``r`` of each mean from the origin (2 large, 0.5 small in the paper).

    References:
        Benevedes et al., arXiv:2503.07962.
    """

    radius: float = 2.0
    processes: tuple[str, ...] = ("signal", "background")
    n_features: int = 2
    nuisance_range: tuple[float, float] = (0.0, math.pi / 2)
    poi_label: ClassVar[str] = "signal fraction"
    nuisance_label: ClassVar[str] = "rotation angle z (rad)"
    parameters: ClassVar[tuple[str, ...]] = ("radius",)

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ValueError(f"radius = {self.radius!r}: expected a positive number")

    def means(self, z: np.ndarray) -> np.ndarray:
        """Process means, shape ``(*z.shape, C, 2)`` (signal first)."""
        z = np.asarray(z, dtype=float)
        m_b = self.radius * np.stack([np.cos(z), np.sin(z)], axis=-1)
        return np.stack([-m_b, m_b], axis=-2)

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Exact ``log p_c(x_i | z_k)``: ``(K, n, C)`` for ``x (n, 2)``, ``z (K,)``."""
        x = np.asarray(x, dtype=float)
        means = self.means(np.atleast_1d(nuisance))  # (K, C, 2)
        diff = x[None, :, None, :] - means[:, None, :, :]  # (K, n, C, 2)
        return -0.5 * np.sum(diff**2, axis=-1) - _LOG_2PI

    def sample(self, rng: np.random.Generator, process: str, nuisance: np.ndarray) -> np.ndarray:
        index = self.processes.index(process)
        means = self.means(np.asarray(nuisance, dtype=float))[..., index, :]
        return means + rng.standard_normal(means.shape)

    def support(self) -> list[tuple[float, float]]:
        """A box holding all but a negligible fraction of the density (for Asimov quadrature)."""
        edge = self.radius + 7.0
        return [(-edge, edge), (-edge, edge)]

    def yield_coefficients(
        self, n_expected: float, nuisance: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        k = len(np.atleast_1d(nuisance))
        a = np.tile([0.0, n_expected], (k, 1))
        b = np.tile([n_expected, -n_expected], (k, 1))
        return a, b
