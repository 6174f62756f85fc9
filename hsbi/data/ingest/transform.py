"""One chunk of events to stored columns: jagged rules, derived columns, selection, weight,
label, non-finite policy and split assignment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hsbi.config.samples import JaggedRule, SampleConfig
from hsbi.data.ingest.expressions import evaluate
from hsbi.data.ingest.split import SPLITS, assign_splits, event_hash
from hsbi.exceptions import DataError

__all__ = ["Chunk", "transform_chunk"]


@dataclass
class Chunk:
    """A transformed chunk: stored columns per split, and what was counted on the way."""

    entries: int
    sum_weights_all: float
    selected: int
    dropped_nonfinite: dict[str, int]
    splits: dict[str, dict[str, np.ndarray]]  # split -> column -> values (features, weight, label)


def _native(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.byteorder not in ("=", "|") and values.dtype.kind not in "OUS":
        values = values.astype(values.dtype.newbyteorder("="))
    return values


def _flat(values: Any) -> np.ndarray:
    import awkward as ak

    if isinstance(values, ak.Array):
        try:
            return _native(ak.to_numpy(values))
        except (ValueError, TypeError):  # strings
            return np.asarray(ak.to_list(values), dtype=object)
    return _native(values)


def _reduce(rule: JaggedRule, values: Any) -> dict[str, np.ndarray]:
    import awkward as ak

    values = ak.Array(values) if not isinstance(values, ak.Array) else values
    if rule.rule == "count":
        return {rule.base: _native(ak.to_numpy(ak.num(values, axis=1))).astype(np.int64)}
    if rule.rule == "sum":
        return {rule.base: _native(ak.to_numpy(ak.sum(values, axis=1)))}
    dtype = _native(ak.to_numpy(ak.flatten(values[:0], axis=None))).dtype
    fill = np.array(rule.fill).astype(dtype) if dtype.kind != "b" else bool(rule.fill)
    k = 1 if rule.rule == "leading" else rule.k
    padded = ak.fill_none(ak.pad_none(values[:, :k], k, axis=1, clip=True), fill)
    table = _native(ak.to_numpy(padded)).astype(dtype).reshape(len(values), k)
    if rule.rule == "leading":
        return {rule.base: np.ascontiguousarray(table[:, 0])}
    return {name: np.ascontiguousarray(table[:, i]) for i, name in enumerate(rule.columns)}


def _broadcast(values: Any, n: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 0:
        return np.full(n, values)
    if values.shape != (n,):
        raise DataError(f"{what}: expected one value per event, got shape {values.shape}")
    return values


def transform_chunk(
    sample: SampleConfig,
    columns: Mapping[str, Any],
    aliases: Mapping[str, str],
    start: int,
    n: int,
    where: str,
) -> Chunk:
    """Turn the branches of ``n`` events (entries ``start..start+n`` of one file) into stored
    columns split into train/validation/test.

    ``columns`` maps branch names to numpy or awkward arrays; ``aliases`` maps the identifiers
    used in expressions to branch names; ``where`` names file and tree in messages.
    """
    jagged = {rule.branch for rule in sample.jagged}
    env: dict[str, Any] = {}
    for alias, name in aliases.items():
        if name not in jagged or name in sample.event_key:
            env[alias] = _flat(columns[name])
    for rule in sample.jagged:
        env.update(_reduce(rule, columns[rule.branch]))
    for name, text in sample.derived.items():
        env[name] = _native(_broadcast(evaluate(text, env, f"{where}: "), n,
                                       f"{where}: derived column {name!r}"))
    stored = {name: env[name] for name in sample.columns}
    for name, values in stored.items():
        if values.dtype.kind not in "biuf":
            raise DataError(f"{where}: column {name!r} has dtype {values.dtype}; expected numbers "
                            f"or booleans to store")
    weight = _broadcast(evaluate(sample.weight, env, f"{where}: weight "), n,
                        f"{where}: weight {sample.weight!r}").astype(np.float64)
    label = _broadcast(evaluate(sample.label, env, f"{where}: label "), n,
                       f"{where}: label {sample.label!r}").astype(np.int64)
    sum_all = float(weight.sum())
    keep = np.ones(n, dtype=bool)
    if sample.selection:
        sel = _broadcast(evaluate(sample.selection, env, f"{where}: selection "), n,
                         f"{where}: selection {sample.selection!r}")
        if sel.dtype.kind != "b":
            raise DataError(f"{where}: selection {sample.selection!r} gives {sel.dtype}; expected "
                            f"a boolean expression (use comparisons, & and |)")
        keep &= sel
    selected = int(keep.sum())
    dropped: dict[str, int] = {}
    for name, values in {**stored, "weight": weight}.items():
        if values.dtype.kind != "f":
            continue
        bad = keep & ~np.isfinite(values)
        if not bad.any():
            continue
        if sample.nonfinite == "fail":
            first = start + int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: column {name!r} has {int(bad.sum())} NaN/inf value(s) (first at entry "
                f"{first}); expected finite values (or set samples.{sample.name}.nonfinite: drop)"
            )
        dropped[name] = int(bad.sum())
        keep &= ~bad
    out = {**stored, "weight": weight, "label": label}
    if sample.event_key:
        key = [(name, env[name.replace("/", "_").replace(".", "_")])
               for name in sample.event_key]
    else:
        entries = np.arange(start, start + n, dtype=np.int64)
        key = [("entry", entries), *((name, out[name]) for name in (*sample.columns, "weight"))]
    # one stable sort by split code (dropped events last) and one gather per column
    codes = assign_splits(event_hash(key, sample.split.seed, n), sample.split)
    codes[~keep] = len(SPLITS)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(SPLITS) + 1))])
    kept = order[: bounds[len(SPLITS)]]
    gathered = {c: v[kept] for c, v in out.items()}
    splits = {name: {c: v[bounds[i] : bounds[i + 1]] for c, v in gathered.items()}
              for i, name in enumerate(SPLITS)}
    return Chunk(entries=n, sum_weights_all=sum_all, selected=selected,
                 dropped_nonfinite=dropped, splits=splits)
