"""Sample definitions of the analysis config: files, tree, columns, selection, weights, splits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hsbi.exceptions import ConfigError

__all__ = [
    "FORMATS",
    "JAGGED_RULES",
    "NONFINITE_POLICIES",
    "JaggedRule",
    "NormalisationConfig",
    "SampleConfig",
    "SplitConfig",
]

#: input formats; ``auto`` picks by file extension (``.parquet``/``.pq`` or ROOT otherwise)
FORMATS = ("auto", "root", "parquet")
#: reductions of a jagged (variable-length) branch to fixed columns
JAGGED_RULES = ("leading", "count", "pad", "sum")
#: what to do with NaN or inf in a stored column: stop with an error, or drop the event and count
NONFINITE_POLICIES = ("fail", "drop")
#: column names written by ingestion itself
RESERVED_COLUMNS = ("weight", "label")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' = {value!r}: expected {expected}")


@dataclass(frozen=True)
class JaggedRule:
    """Reduce the jagged branch ``branch`` to fixed columns.

    - ``leading``: the first element (``fill`` where there is none) -> column ``name``
    - ``count``: the number of elements -> column ``name``
    - ``sum``: the sum of the elements (0 where there is none) -> column ``name``
    - ``pad``: the first ``k`` elements, padded with ``fill`` -> columns ``name_0 .. name_{k-1}``

    ``name`` defaults to ``<branch>_<rule>`` (``<branch>`` for ``pad``).
    """

    branch: str
    rule: str = "leading"
    k: int = 1
    fill: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        _require(self.rule in JAGGED_RULES, "jagged.rule", self.rule, f"one of {JAGGED_RULES}")
        _require(self.k >= 1, "jagged.k", self.k, "an integer >= 1")
        _require(bool(self.branch), "jagged.branch", self.branch, "a branch name")
        _require(
            not self.name or bool(_NAME_RE.match(self.name)),
            "jagged.name", self.name, "an identifier (letters, digits, _)",
        )

    @property
    def base(self) -> str:
        if self.name:
            return self.name
        stem = re.sub(r"[^A-Za-z0-9_]", "_", self.branch)
        return stem if self.rule == "pad" else f"{stem}_{self.rule}"

    @property
    def columns(self) -> tuple[str, ...]:
        if self.rule == "pad":
            return tuple(f"{self.base}_{i}" for i in range(self.k))
        return (self.base,)


@dataclass(frozen=True)
class NormalisationConfig:
    """Per-event normalisation ``cross_section * luminosity / sum_of_weights``.

    ``sum_weights`` says where the sum of weights comes from: ``none`` (the factor is
    ``cross_section * luminosity``), ``events`` (the sum of the weight expression over all events
    of the sample *before* the selection), or ``Tree:branch`` (the sum of ``branch`` over the
    entries of another tree of the same files, e.g. NanoAOD's ``Runs:genEventSumw``).
    Shards keep the raw event weight; the factor is stored in the manifest and applied when the
    shards become tensors.
    """

    cross_section: float = 1.0
    luminosity: float = 1.0
    sum_weights: str = "none"

    def __post_init__(self) -> None:
        _require(self.cross_section > 0, "normalisation.cross_section", self.cross_section,
                 "a positive number")
        _require(self.luminosity > 0, "normalisation.luminosity", self.luminosity,
                 "a positive number")
        ok = self.sum_weights in ("none", "events") or bool(
            re.match(r"^[^:]+:[A-Za-z_][A-Za-z0-9_.]*$", self.sum_weights)
        )
        _require(ok, "normalisation.sum_weights", self.sum_weights,
                 "'none', 'events' or 'Tree:branch' (e.g. 'Runs:genEventSumw')")

    @property
    def tree(self) -> tuple[str, str] | None:
        if ":" not in self.sum_weights:
            return None
        tree, branch = self.sum_weights.split(":", 1)
        return tree, branch


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of train/validation/test; an event's split is a hash of its key and ``seed``."""

    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = (self.train, self.validation, self.test)
        _require(all(f >= 0 for f in fractions) and abs(sum(fractions) - 1.0) < 1e-9,
                 "split", fractions, "fractions >= 0 that add up to 1")


@dataclass(frozen=True)
class SampleConfig:
    """One sample: where its events are and how they become columns of Parquet shards.

    - ``files``: paths or globs (relative to the config file's folder), or fsspec URLs.
    - ``tree``: TTree (TNtuple) or RNTuple name in ROOT files, with directories (``one/two/tree``);
      one per sample.
    - ``branches``: flat branches (or Parquet columns) stored as they are.
    - ``jagged``: reductions of jagged branches (see :class:`JaggedRule`).
    - ``derived``: ``name: expression`` stored columns, computed in order from branches, jagged
      reductions and earlier derived columns (numpy functions such as ``sqrt``, ``where``).
    - ``selection``: a boolean expression; events where it is false are dropped.
    - ``weight``: the event weight expression (stored as column ``weight``).
    - ``label``: the class label expression (stored as column ``label``, int64),
      e.g. ``1`` for a signal sample or ``Label == "s"``.
    - ``event_key``: branches forming an event's identity for the split (e.g. ``run, event``);
      empty: the row identity (entry number in its file and the stored values).
    - ``nonfinite``: ``fail`` (error naming column, file and entry) or ``drop`` (drop the
      event, count it per column in the manifest).
    - ``chunk_entries``: entries per dask partition (bounds memory per worker).
    - ``files_per_group``: files per ingestion branch (0: all files of the sample in one).
    """

    name: str
    files: tuple[str, ...] = ()
    process: str = ""
    format: str = "auto"
    tree: str = field(default="", metadata={"hint": "one tree per sample: several trees need several "
                                                    "samples (one per tree, same branches)"})
    branches: tuple[str, ...] = ()
    jagged: tuple[JaggedRule, ...] = ()
    derived: dict[str, str] = field(default_factory=dict)
    selection: str = ""
    weight: str = "1"
    label: str = "0"
    event_key: tuple[str, ...] = ()
    normalisation: NormalisationConfig = field(default_factory=NormalisationConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    nonfinite: str = "fail"
    chunk_entries: int = 100_000
    files_per_group: int = 0

    def __post_init__(self) -> None:
        key = f"samples.{self.name}"
        _require(bool(_NAME_RE.match(self.name)), "samples.name", self.name,
                 "an identifier (letters, digits, _)")
        _require(len(self.files) > 0, f"{key}.files", list(self.files),
                 "a non-empty list of paths, globs or URLs")
        _require(self.format in FORMATS, f"{key}.format", self.format, f"one of {FORMATS}")
        _require(self.nonfinite in NONFINITE_POLICIES, f"{key}.nonfinite", self.nonfinite,
                 f"one of {NONFINITE_POLICIES}")
        _require(self.chunk_entries >= 1, f"{key}.chunk_entries", self.chunk_entries,
                 "an integer >= 1")
        _require(self.files_per_group >= 0, f"{key}.files_per_group", self.files_per_group,
                 "an integer >= 0 (0: one group)")
        columns = self.columns
        _require(len(columns) > 0, f"{key}.branches", list(self.branches),
                 "at least one stored column (branches, jagged or derived)")
        seen: set[str] = set()
        for column in columns:
            _require(column not in seen, f"{key}", column, "column names that are unique")
            _require(column not in RESERVED_COLUMNS, f"{key}", column,
                     f"no stored column named {' or '.join(RESERVED_COLUMNS)} (written by hsbi)")
            seen.add(column)
        for name in self.derived:
            _require(bool(_NAME_RE.match(name)), f"{key}.derived", name,
                     "column names that are identifiers")

    @property
    def process_label(self) -> str:
        return self.process or self.name

    @property
    def columns(self) -> tuple[str, ...]:
        """The stored feature columns, in order (weight and label come on top)."""
        out = [b.replace("/", "_").replace(".", "_") for b in self.branches]
        for rule in self.jagged:
            out.extend(rule.columns)
        out.extend(self.derived)
        return tuple(out)
