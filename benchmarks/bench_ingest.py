"""Ingestion rows/s against uproot.dask alone, shards -> tensors against pyarrow, and peak memory
when ingesting an input several times larger than the dask worker memory limit."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hsbi.config.samples import SampleConfig
from hsbi.data.ingest import ShardSet, dask_scheduler, fingerprint, ingest_group

COLUMNS = ["pt0", "eta0", "phi0", "pt1", "eta1", "phi1"]


def generate(path: Path, rows: int, chunk: int = 100_000, compressed: bool = True) -> int:
    """A flat NanoAOD-like TTree ``events``: event number, two objects' float32 pt, eta, phi and
    an int32 count, in baskets of ``chunk`` entries, compressed as uproot writes by default
    (ZLIB level 1) or not at all. Returns the size of the branches in memory."""
    import uproot

    rng = np.random.default_rng(0)
    options = {} if compressed else {"compression": None}
    with uproot.recreate(path, **options) as f:
        tree = f.mktree("events", {"event": np.int64, **{c: np.float32 for c in COLUMNS},
                                   "n": np.int32})
        for start in range(0, rows, chunk):
            k = min(chunk, rows - start)
            pts = (20 + rng.exponential(30, (2, k))).astype(np.float32)
            etas = rng.uniform(-2.5, 2.5, (2, k)).astype(np.float32)
            phis = rng.uniform(-np.pi, np.pi, (2, k)).astype(np.float32)
            tree.extend({"event": np.arange(start, start + k, dtype=np.int64),
                         "pt0": pts[0], "eta0": etas[0], "phi0": phis[0],
                         "pt1": pts[1], "eta1": etas[1], "phi1": phis[1],
                         "n": rng.integers(0, 5, k).astype(np.int32)})
    return rows * (8 + 4 * len(COLUMNS) + 4)


class PeakRSS:
    """Samples the resident memory of this process and its children (the dask workers)."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak_total = self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                kids = [p.memory_info().rss for p in self.me.children(recursive=True)]
            except psutil.Error:
                kids = []
            self.peak_worker = max([self.peak_worker, *kids])
            self.peak_total = max(self.peak_total, self.me.memory_info().rss + sum(kids))
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def baseline_read(path: Path, scheduler, step: int) -> float:
    """uproot.dask(library="np") of the same branches, reduced per chunk (nothing gathered)."""
    import dask
    import uproot

    arrays = uproot.dask(f"{path}:events", library="np", step_size=step,
                         filter_name=["event", *COLUMNS, "n"])
    start = time.perf_counter()
    dask.compute(*[a.sum() for a in arrays.values()], scheduler=scheduler)
    return time.perf_counter() - start


def _sample(path: Path, chunk: int) -> SampleConfig:
    return SampleConfig(
        name="bench", files=(str(path),), tree="events", branches=tuple(COLUMNS), jagged=(),
        derived={"p0": "pt0 * cosh(eta0)"}, selection="n > 0", label="n == 1",
        event_key=("event",), chunk_entries=chunk,
    )


def rates(tmp: Path, rows: int, workers: int, chunk: int) -> None:
    """Ingestion against uproot.dask(library="np") alone, then shards -> tensors against
    pyarrow, on one compressed file."""
    import pyarrow.parquet as pq

    path = tmp / "events.root"
    raw = generate(path, rows)
    print(f"[rates] input: {rows:,} rows ({raw / 2**20:.0f} MiB in memory, "
          f"{path.stat().st_size / 2**20:.0f} MiB on disk, ZLIB-1), {workers} dask workers, "
          f"{chunk:,} entries per partition")
    out = tmp / "shards"
    out.mkdir()
    with dask_scheduler("local", workers, "2GiB") as client:
        baseline_read(path, client, chunk)  # warm the page cache and the workers
        t_read = baseline_read(path, client, chunk)
        start = time.perf_counter()
        manifest = ingest_group(_sample(path, chunk), [fingerprint(str(path))], out,
                                scheduler=client)
        t_ingest = time.perf_counter() - start
    read_rate, ingest_rate = rows / t_read, rows / t_ingest
    print(f"ingestion:         {ingest_rate / 1e6:6.2f} M rows/s  (selection, derived column, "
          f"hash split, Parquet shards, statistics; {manifest['rows']:,} rows kept)")
    print(f"uproot.dask(np):   {read_rate / 1e6:6.2f} M rows/s  (the same file and branches, "
          f"read alone)")
    print(f"  ratio {ingest_rate / read_rate:.2f}   (goal >= 0.5)")

    shards = [out / s["file"] for s in manifest["splits"]["train"]["shards"]]
    features = [c["name"] for c in manifest["schema"] if c["role"] == "feature"]
    t_arrow = min(_timed(lambda: pq.read_table(shards)) for _ in range(3))
    t_tensor = min(_timed(lambda: ShardSet([out], "train", features).tensors())
                   for _ in range(3))
    n = manifest["splits"]["train"]["rows"]
    print(f"shards -> tensors: {n / t_tensor / 1e6:6.2f} M rows/s  (x, w, y torch tensors of the "
          f"train split, {n:,} rows, {len(shards)} shards)")
    print(f"pyarrow read_table:{n / t_arrow / 1e6:6.2f} M rows/s  (the same shards)")
    print(f"  ratio {t_arrow / t_tensor:.2f}   (goal >= 0.8)")


def memory(tmp: Path, rows: int, workers: int, limit_text: str, chunk: int) -> None:
    """Peak memory ingesting an (uncompressed) input >= 4x the worker memory limit."""
    from dask.utils import parse_bytes

    limit = parse_bytes(limit_text)
    path = tmp / "big.root"
    raw = generate(path, rows, chunk=chunk, compressed=False)
    print(f"[memory] input: {rows:,} rows, {raw / 2**30:.2f} GiB in memory = "
          f"{raw / limit:.1f}x the worker memory limit {limit_text} ({workers} workers)")
    out = tmp / "big-shards"
    out.mkdir()
    with dask_scheduler("local", workers, limit_text) as client, PeakRSS() as rss:
        start = time.perf_counter()
        manifest = ingest_group(_sample(path, chunk), [fingerprint(str(path))], out,
                                scheduler=client)
        elapsed = time.perf_counter() - start
    print(f"finished: {manifest['rows']:,} rows in {elapsed:.0f} s; peak resident memory "
          f"{rss.peak_worker / 2**20:.0f} MiB per worker (limit {limit / 2**20:.0f} MiB), "
          f"{rss.peak_total / 2**20:.0f} MiB client + workers")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000, help="rows of the rate test")
    parser.add_argument("--memory-rows", type=int, default=48_000_000,
                        help="rows of the memory test (36 bytes each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="400MiB", help="per worker, memory test")
    parser.add_argument("--chunk", type=int, default=100_000)
    args = parser.parse_args()
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="hsbi-bench-ingest-"))
    try:
        rates(tmp, args.rows, args.workers, args.chunk)
        memory(tmp, args.memory_rows, args.workers, args.memory_limit, args.chunk)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
