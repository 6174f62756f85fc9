"""Artifact addresses: a hash of family, canonical parameters, input addresses and code version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hsbi.store.code import code_version

__all__ = ["ADDRESS_LENGTH", "canonical_json", "code_version", "make_address"]

#: Hex characters kept of the sha256 (96 bits: collisions are out of reach for any store).
ADDRESS_LENGTH = 24


def _normalize(obj: Any) -> Any:
    """Turn ``obj`` into JSON-native types with one spelling per value."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _normalize(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _normalize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalize(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float) or hasattr(obj, "__float__"):
        value = float(obj)
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} cannot enter an address")
        # integral floats and ints hash alike (1 == 1.0 in a config)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    raise TypeError(f"cannot canonicalise {type(obj).__name__} for an address")


def canonical_json(obj: Any) -> str:
    """Canonical JSON text of ``obj``: sorted keys, no whitespace, shortest float repr."""
    return json.dumps(_normalize(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def make_address(
    family: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, str] | Sequence[str] = (),
    code: str = "",
) -> str:
    """The address of an artifact made by ``family`` from ``params`` and ``inputs``.

    Arguments:
        family: the producing task family, e.g. ``"TrainEstimator"``.
        params: significant parameters; any JSON-able nesting, order does not matter.
        inputs: addresses of the input artifacts (named or in order).
        code: the code version of the producing stage, see :func:`code_version`.
    """
    payload = {"family": family, "params": params, "inputs": inputs, "code": code}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:ADDRESS_LENGTH]
