"""Ingest a group of files of one sample into Parquet shards, out of core with dask.

Everything that can be checked without reading events (files, trees, branches, types, schema
across files, expressions) is checked before any task runs; errors raised by a task (non-finite
values) reach the caller as the same :class:`DataError`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsbi.config.samples import SampleConfig
from hsbi.data.ingest.sources import (
    FileSchema,
    InputFile,
    file_format,
    inspect_file,
    read_names,
    sum_weights_from_tree,
)
from hsbi.data.ingest.split import SPLITS
from hsbi.data.ingest.stats import ColumnStats
from hsbi.data.ingest.transform import Chunk, transform_chunk
from hsbi.exceptions import DataError, EmptySampleWarning, HSBIError

__all__ = ["MANIFEST", "Partition", "check_schemas", "ingest_group", "plan_partitions"]

#: the schema manifest of an ingested group, next to its shards
MANIFEST = "ingest.json"
_COMPRESSION = "lz4"


@dataclass(frozen=True)
class Partition:
    """Entries ``start..stop`` of the ``index``-th file of a group: one dask task."""

    index: int
    path: str
    start: int
    stop: int

    @property
    def shard(self) -> str:
        return f"part-{self.index:04d}-{self.start:012d}.parquet"


def check_schemas(sample: SampleConfig, schemas: Sequence[FileSchema]) -> None:
    """Every file of a sample must give its columns the same types."""
    if not schemas:
        return
    first = schemas[0]
    for other in schemas[1:]:
        for name, col in first.columns.items():
            if other.columns[name].text != col.text:
                raise DataError(
                    f"sample {sample.name!r}: branch {name!r} is {col.text} in {first.file.path} "
                    f"but {other.columns[name].text} in {other.file.path}; expected the same "
                    f"schema in every file of a sample"
                )


def plan_partitions(sample: SampleConfig, schemas: Sequence[FileSchema]) -> list[Partition]:
    """Ranges of ``chunk_entries`` entries per file (a file with no entries gives none)."""
    step = sample.chunk_entries
    return [
        Partition(i, s.file.path, start, min(start + step, s.entries))
        for i, s in enumerate(schemas)
        for start in range(0, s.entries, step)
    ]


def _write_shard(path: Path, columns: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    # dictionary encoding only where values repeat (integers, flags): for floats it costs time
    # and rarely saves space
    small = [n for n, v in columns.items() if v.dtype.kind in "biu"]
    pq.write_table(table, path, compression=_COMPRESSION, use_dictionary=small)


def _finish_chunk(chunk: Chunk, part: Partition, out_dir: str) -> dict[str, Any]:
    """Write the chunk's shards (one per non-empty split) and return what the manifest needs."""
    splits = {}
    for split, columns in chunk.splits.items():
        rows = len(columns["weight"])
        info: dict[str, Any] = {"rows": rows, "shard": None,
                                "sum_weights": float(columns["weight"].sum()),
                                "sum_weights2": float(np.square(columns["weight"]).sum()),
                                "stats": {c: ColumnStats.of(v) for c, v in columns.items()}}
        if rows:
            rel = f"{split}/{part.shard}"
            _write_shard(Path(out_dir) / rel, columns)
            info["shard"] = rel
        splits[split] = info
    dtypes = {c: str(v.dtype) for c, v in chunk.splits["train"].items()}
    return {"entries": chunk.entries, "sum_weights_all": chunk.sum_weights_all,
            "selected": chunk.selected, "dropped_nonfinite": chunk.dropped_nonfinite,
            "splits": splits, "dtypes": dtypes}


def _process_root(sample, aliases, part: Partition, events: Any, out_dir: str) -> dict[str, Any]:
    columns = {name: events[name] for name in aliases.values()}
    where = f"file {part.path}, tree {sample.tree!r}"
    chunk = transform_chunk(sample, columns, aliases, part.start, part.stop - part.start, where)
    return _finish_chunk(chunk, part, out_dir)


def _process_parquet(sample, aliases, part: Partition, out_dir: str) -> dict[str, Any]:
    columns = _read_parquet_range(part.path, list(aliases.values()), part.start, part.stop)
    chunk = transform_chunk(sample, columns, aliases, part.start, part.stop - part.start,
                            f"file {part.path}")
    return _finish_chunk(chunk, part, out_dir)


def _read_parquet_range(path: str, names: list[str], start: int, stop: int) -> dict[str, Any]:
    import awkward as ak
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hsbi.data.ingest.sources import _open_bytes

    with _open_bytes(path) as f:
        pf = pq.ParquetFile(f)
        groups, offset, first = [], 0, None
        for i in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(i).num_rows
            if offset + rows > start and offset < stop:
                groups.append(i)
                first = offset if first is None else first
            offset += rows
        table = pf.read_row_groups(groups, columns=names) if groups else None
    table = table.slice(start - (first or 0), stop - start)
    out: dict[str, Any] = {}
    for name in names:
        column = table.column(name)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) \
                or pa.types.is_fixed_size_list(column.type):
            out[name] = ak.from_arrow(column)
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def _tasks(sample: SampleConfig, partitions: Sequence[Partition], out_dir: str) -> list[Any]:
    import dask

    names, aliases = read_names(sample)
    roots = [p for p in partitions if file_format(sample, p.path) == "root"]
    tasks = []
    if roots:
        import uproot

        files: dict[str, dict[str, Any]] = {}
        for p in roots:
            files.setdefault(p.path, {"object_path": sample.tree, "steps": []})["steps"].append(
                [p.start, p.stop])
        events = uproot.dask(files, filter_name=names, full_paths=True, library="ak",
                             open_files=False)
        parts = events.to_delayed(optimize_graph=False)  # one per step, files in order
        process = dask.delayed(_process_root, pure=True)
        tasks += [process(sample, aliases, p, part, out_dir) for p, part in zip(roots, parts)]
    process_pq = dask.delayed(_process_parquet, pure=True)
    tasks += [process_pq(sample, aliases, p, out_dir) for p in partitions if p not in roots]
    return tasks


def _external_sum_weights(sample: SampleConfig, schemas: Sequence[FileSchema]) -> float | None:
    target = sample.normalisation.tree
    if target is None:
        return None
    tree, branch = target
    return sum(sum_weights_from_tree(s.file, tree, branch) for s in schemas)


def _read_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa
    import uproot

    return (OSError, ValueError, EOFError, uproot.deserialization.DeserializationError,
            pa.ArrowException)


def ingest_group(
    sample: SampleConfig,
    files: Sequence[InputFile],
    out_dir: str | Path,
    scheduler: Any = None,
    allow_empty: bool = True,
) -> dict[str, Any]:
    """Ingest ``files`` of ``sample`` into Parquet shards under ``out_dir``.

    Layout: ``<split>/part-<file>-<first entry>.parquet`` per dask partition and split (none
    for an empty one) and ``ingest.json``: schema, files (sha256, entries), row counts and sums of
    weights (before the selection, after it, per split), normalisation inputs, and per-column
    statistics per split. ``scheduler`` is passed to ``dask.compute`` (None: dask's default, a
    distributed ``Client`` when one is active).

    Empty input (files without entries) gives a valid sample with zero rows and no shards; so
    does a selection that keeps nothing (with an :class:`EmptySampleWarning`: a process may have
    no events in a region), unless ``allow_empty`` is false (every other sample of the ingestion
    is empty too: a :class:`DataError`; :class:`ShardSet` refuses samples that are all empty). Non-finite
    dropping that keeps nothing of a non-empty input is a :class:`DataError`.
    """
    import dask

    out = Path(out_dir)
    if not files:
        raise DataError(f"sample {sample.name!r}: no input files; expected at least one")
    schemas = [inspect_file(sample, f) for f in files]
    check_schemas(sample, schemas)
    external = _external_sum_weights(sample, schemas)
    partitions = plan_partitions(sample, schemas)
    tasks = _tasks(sample, partitions, str(out))
    try:
        results = list(dask.compute(*tasks, scheduler=scheduler)) if tasks else []
    except HSBIError:
        raise
    except _read_errors() as err:  # a basket or page that cannot be read
        first = str(err).splitlines()[0] if str(err) else ""
        raise DataError(f"sample {sample.name!r}: reading {', '.join(f.path for f in files)} "
                        f"failed ({type(err).__name__}: {first}); expected complete, readable "
                        f"files") from None
    manifest = _manifest(sample, schemas, results, external)
    entries, rows = manifest["entries"], manifest["rows"]
    if entries and not manifest["selected"]:  # a process may have no events in a region
        message = (f"sample {sample.name!r}: the selection {sample.selection!r} keeps none of the "
                   f"{entries} events of {', '.join(f.name for f in files)}")
        if not allow_empty:
            raise DataError(f"{message}, and every other sample of the ingestion is empty too; "
                            f"expected at least one sample with events")
        warnings.warn(f"{message}; the sample is empty", EmptySampleWarning, stacklevel=2)
    if manifest["selected"] and not rows:
        raise DataError(f"sample {sample.name!r}: every selected event has a NaN/inf value "
                        f"({manifest['dropped_nonfinite']}); expected at least one finite event")
    text = json.dumps(manifest, indent=1, sort_keys=True)
    (out / MANIFEST).write_text(text + "\n")
    return json.loads(text)


def _manifest(sample: SampleConfig, schemas: Sequence[FileSchema], results: list[dict[str, Any]],
              external: float | None) -> dict[str, Any]:
    stored = [*sample.columns, "weight", "label"]
    dtypes = results[0]["dtypes"] if results else {}
    for result in results[1:]:
        for name, dtype in result["dtypes"].items():
            if dtype != dtypes[name]:
                raise DataError(f"sample {sample.name!r}: column {name!r} is {dtypes[name]} in "
                                f"one chunk and {dtype} in another; expected one dtype per column")
    splits: dict[str, Any] = {}
    for split in SPLITS:
        stats = {c: ColumnStats() for c in stored}
        shards, rows, sumw, sumw2 = [], 0, 0.0, 0.0
        for result in results:
            info = result["splits"][split]
            rows += info["rows"]
            sumw += info["sum_weights"]
            sumw2 += info["sum_weights2"]
            for c in stored:
                stats[c] = stats[c].merge(info["stats"][c])
            if info["shard"]:
                shards.append({"file": info["shard"], "rows": info["rows"]})
        splits[split] = {"rows": rows, "sum_weights": sumw, "sum_weights2": sumw2,
                         "shards": shards, "stats": {c: s.to_json() for c, s in stats.items()}}
    dropped: dict[str, int] = {}
    for result in results:
        for name, count in result["dropped_nonfinite"].items():
            dropped[name] = dropped.get(name, 0) + count
    sum_all = float(sum(r["sum_weights_all"] for r in results))
    norm = sample.normalisation
    denominator = {"none": None, "events": sum_all}.get(norm.sum_weights, external)
    definition = asdict(sample)
    definition.pop("files")
    return {
        "format_version": 1,
        "sample": sample.name,
        "process": sample.process_label,
        "definition": definition,
        "files": [{**s.file.identity(), "entries": s.entries} for s in schemas],
        "schema": [{"name": c, "dtype": dtypes.get(c, ""),
                    "role": {"weight": "weight", "label": "label"}.get(c, "feature")}
                   for c in stored],
        "source_schema": {n: c.text for n, c in schemas[0].columns.items()},
        "entries": int(sum(s.entries for s in schemas)),
        "selected": int(sum(r["selected"] for r in results)),
        "rows": int(sum(splits[s]["rows"] for s in SPLITS)),
        "dropped_nonfinite": dropped,
        "sum_weights": {"all": sum_all, "selected_finite": float(
            sum(splits[s]["sum_weights"] for s in SPLITS))},
        "normalisation": {"cross_section": norm.cross_section, "luminosity": norm.luminosity,
                          "sum_weights_from": norm.sum_weights, "sum_weights": denominator},
        "split": {"fractions": asdict(sample.split),
                  "key": list(sample.event_key) or ["entry", "stored values"]},
        "splits": splits,
    }
