"""From shards to training: contiguous tensors served in batches, streamed shard by shard."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsbi.data.ingest.pipeline import MANIFEST
from hsbi.data.ingest.split import SPLITS
from hsbi.data.ingest.stats import ColumnStats
from hsbi.exceptions import DataError

__all__ = ["Batch", "ShardSet", "TensorBatches"]


@dataclass(frozen=True)
class Batch:
    """Features ``x`` (n, d) float32, normalised weights ``w`` (n,) float32, labels ``y`` (n,)."""

    x: Any
    w: Any
    y: Any


class TensorBatches:
    """A batch sampler over contiguous tensors: each batch is one gather, no per-sample calls."""

    def __init__(self, x: Any, w: Any, y: Any, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size = {batch_size}: expected an integer >= 1")
        self.x, self.w, self.y = x, w, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        import torch

        n = len(self.x)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen)
            self.epoch += 1
        for i in range(len(self)):
            if self.shuffle:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield Batch(self.x[idx], self.w[idx], self.y[idx])
            else:
                sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield Batch(self.x[sl], self.w[sl], self.y[sl])


def _check_not_all_emptied(manifests: Iterable[dict]) -> None:
    """A sample may keep no events (a process absent from a region), but not every sample."""
    manifests = list(manifests)
    if any(m["rows"] for m in manifests) or not any(m["entries"] for m in manifests):
        return  # events, or only empty input files (valid empty samples)
    names = sorted({f"{m['sample']!r} ({m['definition'].get('selection')!r})" for m in manifests})
    raise DataError(f"every sample is empty after its selection: {', '.join(names)}; expected at "
                    f"least one sample with events")


class ShardSet:
    """The shards of one split of one or more ingested groups (artifact directories).

    Weights are multiplied by each sample's normalisation factor
    ``cross_section * luminosity / sum_of_weights`` (the sums of all groups of a sample together).
    ``features`` defaults to every feature column, which must then agree across samples.
    """

    def __init__(self, dirs: Sequence[str | Path], split: str = "train",
                 features: Sequence[str] | None = None, normalise: bool = True) -> None:
        if split not in SPLITS:
            raise DataError(f"split {split!r}: expected one of {SPLITS}")
        self.split = split
        self.manifests = [(Path(d), json.loads((Path(d) / MANIFEST).read_text())) for d in dirs]
        if not self.manifests:
            raise DataError("no ingested samples given; expected at least one")
        _check_not_all_emptied(m for _, m in self.manifests)
        names = [[c["name"] for c in m["schema"] if c["role"] == "feature"]
                 for _, m in self.manifests]
        self.features = list(features) if features is not None else names[0]
        for (d, m), have in zip(self.manifests, names):
            missing = [f for f in self.features if f not in have]
            if missing:
                raise DataError(f"sample {m['sample']!r} ({d}): no column {missing[0]!r}; it has "
                                f"{', '.join(have)}")
        self.factors = self._factors(normalise)

    def _factors(self, normalise: bool) -> list[float]:
        totals: dict[str, float] = {}
        for _, m in self.manifests:
            norm = m["normalisation"]
            if norm["sum_weights"] is not None:
                totals[m["sample"]] = totals.get(m["sample"], 0.0) + norm["sum_weights"]
        factors = []
        for _, m in self.manifests:
            norm = m["normalisation"]
            factor = norm["cross_section"] * norm["luminosity"]
            if norm["sum_weights"] is not None:
                if totals[m["sample"]] == 0:
                    raise DataError(f"sample {m['sample']!r}: the sum of weights is 0; expected a "
                                    f"non-zero normalisation")
                factor /= totals[m["sample"]]
            factors.append(factor if normalise else 1.0)
        return factors

    @property
    def rows(self) -> int:
        return sum(m["splits"][self.split]["rows"] for _, m in self.manifests)

    def shards(self) -> list[tuple[Path, float]]:
        return [(path, factor) for path, factor, _ in self._shard_rows()]

    def _shard_rows(self) -> list[tuple[Path, float, int]]:
        """Each shard of the split with its sample's factor and its rows (from the manifest)."""
        return [(d / s["file"], f, int(s["rows"])) for (d, m), f in zip(self.manifests, self.factors)
                for s in m["splits"][self.split]["shards"]]

    def standardisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation per feature from the shards' statistics (no data read)."""
        means, stds = [], []
        for name in self.features:
            total = ColumnStats()
            for _, m in self.manifests:
                total = total.merge(ColumnStats.from_json(m["splits"][self.split]["stats"][name]))
            means.append(total.mean)
            stds.append(total.std if total.std > 0 else 1.0)
        return np.array(means, dtype=np.float32), np.array(stds, dtype=np.float32)

    def _read(self, shards: Sequence[tuple[Path, float, int]]) -> tuple[np.ndarray, ...]:
        """The shards, in order, into a row-major float32 ``x``, float32 normalised ``w`` and
        int64 ``y`` allocated once for all of them. Each shard is decoded and written straight
        into its rows by one of up to ``pyarrow.cpu_count()`` threads (both release the GIL), so
        copies overlap decoding and a shard's columns are still in cache when they are copied;
        with fewer shards than CPUs, pyarrow also decodes each shard's columns in parallel."""
        import pyarrow as pa

        offsets = np.cumsum([0, *(rows for _, _, rows in shards)])
        n, d = int(offsets[-1]), len(self.features)
        x, w, y = _empty((n, d), np.float32), _empty((n,), np.float32), _empty((n,), np.int64)
        columns = list(dict.fromkeys([*self.features, "weight", "label"]))

        cpus = pa.cpu_count()
        workers = min(cpus, len(shards))

        def one(i: int) -> None:
            path, factor, rows = shards[i]
            at = int(offsets[i])
            table = _read_shard(path, columns, use_threads=workers < cpus)
            _fill(path, table, self.features, factor, rows,
                  x[at : at + rows], w[at : at + rows], y[at : at + rows])

        if workers <= 1:
            for i in range(len(shards)):
                one(i)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="hsbi-shards") as pool:
                for _ in pool.map(one, range(len(shards))):
                    pass
        return x, w, y

    def tensors(self) -> tuple[Any, Any, Any]:
        """The whole split as three contiguous tensors (it must fit in memory)."""
        import torch

        shards = self._shard_rows()
        if not shards:
            d = len(self.features)
            return (torch.empty((0, d)), torch.empty(0), torch.empty(0, dtype=torch.int64))
        return tuple(torch.from_numpy(a) for a in self._read(shards))

    def stream(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Batches read one shard at a time (memory bounded by the largest shard); with
        ``shuffle`` the shard order and the rows within each shard are permuted."""
        import torch

        shards = self._shard_rows()
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(shards)) if shuffle else range(len(shards))
        for i in order:
            xs, ws, ys = (torch.from_numpy(a) for a in self._read([shards[i]]))
            yield from TensorBatches(xs, ws, ys, batch_size, shuffle=shuffle,
                                     seed=int(rng.integers(1 << 31)))


#: rows of ``x`` written column by column at a time: 8192 x 7 float32 (224 KiB) stay in a core's
#: L2 cache across the strided writes of the columns
_BLOCK = 8192


def _empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array from pyarrow's memory pool, whose pages earlier reads have already
    faulted in are reused (a fresh ``np.empty`` of this size is a new mapping that the kernel
    faults in and zeroes page by page on the first writes). The array keeps its buffer alive."""
    import pyarrow as pa

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(pa.allocate_buffer(nbytes), dtype=dtype).reshape(shape)


def _read_shard(path: Path, columns: list[str], use_threads: bool) -> Any:
    """One shard's columns (``ParquetFile.read``: less overhead per file than ``read_table``'s
    datasets)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read(columns=columns, use_threads=use_threads)


def _fill(path: Path, table: Any, features: Sequence[str], factor: float, rows: int,
          x: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    """One shard's table into its rows of ``x``, ``w`` and ``y``: features cast to float32 by
    arrow where they are not float32 already (as ``Table.cast`` does; none is in ingested
    shards) and written straight into their strided columns of ``x``, ``_BLOCK`` rows at a time
    (the block stays in cache across its columns), weights times ``factor`` computed in the
    weights' type and narrowed in one pass, labels widened to int64."""
    import pyarrow as pa

    if table.num_rows != rows:
        raise DataError(f"shard {path}: {table.num_rows} rows; its manifest says {rows}")
    columns = []
    for name in features:
        column = table.column(name)
        columns.append(column if column.type == pa.float32() else column.cast(pa.float32()))
    if len({tuple(len(chunk) for chunk in c.chunks) for c in columns}) > 1:
        # chunked differently (not so in a shard's row groups): one chunk each
        columns = [pa.chunked_array([c.combine_chunks()], pa.float32()) for c in columns]
    at = 0
    for chunks in zip(*(c.chunks for c in columns)):  # a row group, in blocks of rows
        arrays = [chunk.to_numpy() for chunk in chunks]
        n = len(chunks[0])
        for start in range(0, n, _BLOCK):
            block = x[at + start : at + min(n, start + _BLOCK)]
            for j, values in enumerate(arrays):
                block[:, j] = values[start : start + _BLOCK]
        at += n
    at = 0
    for chunk in table.column("weight").chunks:  # one pass: scale and narrow
        np.multiply(chunk.to_numpy(), factor, out=w[at : at + len(chunk)], casting="unsafe")
        at += len(chunk)
    at = 0
    for chunk in table.column("label").chunks:
        y[at : at + len(chunk)] = chunk.to_numpy()
        at += len(chunk)
