"""Auxiliary measurements of the nuisance: the constraint term of the NLL and its sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsbi.exceptions import ConfigError, DataError

__all__ = ["CONSTRAINTS", "Constraint"]

#: Kinds of auxiliary measurement of the nuisance ``z`` (``sigma``: its width).
CONSTRAINTS = ("gaussian", "lognormal", "none")


@dataclass(frozen=True)
class Constraint:
    """The auxiliary measurement ``aux`` of the nuisance ``z`` and its NLL term.

    - ``gaussian``: ``aux ~ N(z, sigma)``; term ``(z - aux)^2 / (2 sigma^2)``.
    - ``lognormal``: ``log aux ~ N(log z, sigma)`` (``sigma`` the relative width); term
      ``(log z - log aux)^2 / (2 sigma^2)``; needs ``z > 0`` and ``aux > 0``.
    - ``none``: no measurement (the data alone constrain ``z``); term 0, ``aux = z``.
    """

    kind: str = "gaussian"
    sigma: float | None = 0.1

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINTS:
            raise ConfigError(f"nuisance constraint {self.kind!r}: expected one of {CONSTRAINTS}")
        if self.kind != "none" and not (self.sigma is not None and np.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"{self.kind} nuisance constraint: width {self.sigma!r}, expected a positive number")

    @classmethod
    def of(cls, kind: str, sigma: float | None) -> Constraint:
        """``kind`` with width ``sigma``; no width (``None``) means no constraint."""
        if kind == "none" or (sigma is None and kind in CONSTRAINTS):
            return cls("none", None)
        return cls(kind, None if sigma is None else float(sigma))

    @property
    def free(self) -> bool:
        """True when the nuisance has no auxiliary measurement."""
        return self.kind == "none"

    def nll(self, z: np.ndarray, aux: float) -> np.ndarray:
        """The constraint term at nuisance values ``z`` (any shape) for the measurement ``aux``."""
        z = np.asarray(z, dtype=float)
        if self.kind == "none":
            return np.zeros_like(z)
        if self.kind == "gaussian":
            return (z - aux) ** 2 / (2 * self.sigma**2)
        if not aux > 0:
            raise DataError(f"lognormal nuisance constraint: auxiliary measurement {aux!r}, expected > 0")
        with np.errstate(divide="ignore", invalid="ignore"):
            term = (np.log(np.where(z > 0, z, 1.0)) - np.log(aux)) ** 2 / (2 * self.sigma**2)
        return np.where(z > 0, term, np.inf)

    def sample(self, rng: np.random.Generator, z: float) -> float:
        """One auxiliary measurement at the true value ``z`` (no random draw for ``none``)."""
        if self.kind == "none":
            return float(z)
        if self.kind == "gaussian":
            return float(z + self.sigma * rng.standard_normal())
        return float(z * np.exp(self.sigma * rng.standard_normal()))
