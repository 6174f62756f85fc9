"""The interface shared by exact models and learned estimators: per-process log densities."""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["ComponentDensity", "MixtureModel"]


class ComponentDensity(Protocol):
    """Anything that gives per-process log densities (or log ratios to a fixed reference).

    ``log_components(x, nuisance)`` takes events ``x`` of shape ``(n, D)`` and nuisance values of
    shape ``(K,)`` and returns ``(K, n, C)``: ``log p_c(x_i | nuisance_k)`` up to a term that
    depends on ``x`` alone (it cancels in every likelihood ratio).
    """

    processes: tuple[str, ...]

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray: ...


class MixtureModel:
    """A simulator with an exact likelihood: a mixture of processes with one nuisance.

    Subclasses define ``processes``, ``nuisance_range``, ``poi_range``, ``log_components``,
    ``sample`` and ``yield_coefficients``: process ``c`` has the expected yield
    ``a_c(z) + mu * b_c(z)`` at nuisance value ``z``. ``poi_label`` and ``nuisance_label`` say
    what ``mu`` and ``z`` are (for messages and plots); ``parameters`` names the constructor
    arguments an analysis config may set (``model.parameters``).
    """

    processes: tuple[str, ...] = ()
    n_features: int = 0
    nuisance_range: tuple[float, float] = (0.0, 0.0)
    poi_range: tuple[float, float] = (0.0, 1.0)
    poi_label: str = "signal strength"
    nuisance_label: str = "nuisance parameter"
    parameters: tuple[str, ...] = ()
    #: whether ``log_components`` is the exact likelihood (False for data-driven models)
    exact: bool = True
    #: whether the model samples ingested events (``with_events``, then ``for_split``)
    needs_events: bool = False

    def for_split(self, split: str) -> MixtureModel:
        """The model sampling the events of ``split`` (train, validation, test) for data-driven
        models; a simulator is the same for every split."""
        return self

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sample(
        self, rng: np.random.Generator, process: str, nuisance: np.ndarray
    ) -> np.ndarray:
        """One event of ``process`` per entry of ``nuisance`` (shape ``(n,)``): ``(n, D)``."""
        raise NotImplementedError

    def yield_coefficients(
        self, n_expected: float, nuisance: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` of shape ``(K, C)`` for nuisance values ``(K,)``: yields ``a + mu * b``."""
        raise NotImplementedError

    def support(self) -> list[tuple[float, float]]:
        """Per feature, an interval holding all but a negligible fraction of every process."""
        raise NotImplementedError

    def yields(self, n_expected: float, mu: float, nuisance: float) -> np.ndarray:
        """Expected yield per process at one point, shape ``(C,)``."""
        a, b = self.yield_coefficients(n_expected, np.array([nuisance]))
        return np.clip(a[0] + mu * b[0], 0.0, None)

    def sample_dataset(
        self, rng: np.random.Generator, mu: float, nuisance: float, n_expected: float
    ) -> np.ndarray:
        """An extended dataset: ``n ~ Poisson(sum of yields)``, processes by their yields."""
        counts = rng.poisson(self.yields(n_expected, mu, nuisance))
        parts = [
            self.sample(rng, proc, np.full(k, nuisance)) for proc, k in zip(self.processes, counts)
        ]
        x = np.concatenate(parts, axis=0)
        return x[rng.permutation(len(x))]

    def log_prob(self, x: np.ndarray, mu: float, nuisance: float, n_expected: float) -> np.ndarray:
        """Normalised ``log p(x | mu, nuisance)`` per event, shape ``(n,)``."""
        y = self.yields(n_expected, mu, nuisance)
        w = y / y.sum()
        comps = self.log_components(x, np.array([nuisance]))[0]
        return np.log(np.exp(comps) @ w)
