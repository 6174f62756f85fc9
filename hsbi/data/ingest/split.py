"""Deterministic train/validation/test assignment from a hash of each event's key."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hsbi.config.samples import SplitConfig
from hsbi.exceptions import DataError

__all__ = ["SPLITS", "assign_splits", "event_hash"]

#: split names, in the order of their codes 0, 1, 2
SPLITS = ("train", "validation", "test")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wraps modulo 2**64)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _as_u64(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = values.astype(np.float64) + 0.0  # -0.0 -> 0.0
        values = np.where(np.isnan(values), np.nan, values)  # one NaN pattern
        return values.view(np.uint64)
    if values.dtype.kind in "iub":
        return values.astype(np.int64).view(np.uint64)
    raise DataError(f"event key column {name!r} has dtype {values.dtype}; expected numbers")


def event_hash(columns: Sequence[tuple[str, np.ndarray]], seed: int, n: int) -> np.ndarray:
    """A 64-bit hash per event of the key columns' values and ``seed``.

    The hash of an event depends on nothing but its key values, so the split never depends on
    file order, chunking or the number of workers.
    """
    with np.errstate(over="ignore"):
        h = np.full(n, _mix(np.array([seed], dtype=np.uint64) + _GOLDEN)[0], dtype=np.uint64)
        for name, values in columns:
            h = _mix((h ^ _as_u64(values, name)) + _GOLDEN)
    return h


def assign_splits(hashes: np.ndarray, split: SplitConfig) -> np.ndarray:
    """Split codes (0 train, 1 validation, 2 test) from hashes: a uniform number in [0, 1)
    compared with the cumulative fractions."""
    u = (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53
    code = (u >= split.train).astype(np.int8)
    code += (u >= split.train + split.validation).astype(np.int8)
    return code
