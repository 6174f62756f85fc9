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
        return [(d / s["file"], f) for (d, m), f in zip(self.manifests, self.factors)
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

    def _read(self, paths: Sequence[Path], factor: float) -> tuple[np.ndarray, ...]:
        """Shards of one sample read together (pyarrow decodes them on its threads) into a
        row-major float32 ``x``, float32 normalised ``w`` and int64 ``y``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(list(map(str, paths)), columns=[*self.features, "weight", "label"])
        features = table.select(self.features).cast(
            pa.schema([(name, pa.float32()) for name in self.features]))
        x = np.empty((table.num_rows, len(self.features)), dtype=np.float32)
        at = 0
        for batch in features.to_batches():  # arrow's row-major conversion, one block per batch
            block = np.asarray(batch.to_tensor(row_major=True))
            x[at : at + len(block)] = block
            at += len(block)
        w = np.empty(table.num_rows, dtype=np.float32)
        at = 0
        for chunk in table.column("weight").chunks:  # one pass: scale and narrow
            np.multiply(chunk.to_numpy(), factor, out=w[at : at + len(chunk)], casting="unsafe")
            at += len(chunk)
        labels = [c.to_numpy() for c in table.column("label").chunks]
        y = np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
        return x, w, y.astype(np.int64, copy=False)

    def tensors(self) -> tuple[Any, Any, Any]:
        """The whole split as three contiguous tensors (it must fit in memory)."""
        import torch

        parts = []
        for (d, m), factor in zip(self.manifests, self.factors):
            paths = [d / s["file"] for s in m["splits"][self.split]["shards"]]
            if paths:
                parts.append(self._read(paths, factor))
        if not parts:
            d = len(self.features)
            return (torch.empty((0, d)), torch.empty(0), torch.empty(0, dtype=torch.int64))
        if len(parts) == 1:
            return tuple(torch.from_numpy(a) for a in parts[0])
        return tuple(torch.from_numpy(np.concatenate(arrays)) for arrays in zip(*parts))

    def stream(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Batches read one shard at a time (memory bounded by the largest shard); with
        ``shuffle`` the shard order and the rows within each shard are permuted."""
        import torch

        shards = self.shards()
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(shards)) if shuffle else range(len(shards))
        for i in order:
            path, factor = shards[i]
            xs, ws, ys = (torch.from_numpy(a) for a in self._read([path], factor))
            yield from TensorBatches(xs, ws, ys, batch_size, shuffle=shuffle,
                                     seed=int(rng.integers(1 << 31)))
