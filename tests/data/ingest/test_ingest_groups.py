"""File groups of one sample, and where dask runs: neither changes what is stored."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from distributed import LocalCluster

from ingest_helpers import DATA, sample, shard_digests
from hsbi.data.ingest import (
    ShardSet,
    dask_scheduler,
    fingerprint,
    group_files,
    ingest_group,
    resolve_files,
)


def zmumu(**extra):
    definition = dict(
        name="zmumu", files=["root/uproot-Zmumu-*.root"], tree="events",
        branches=["M", "pt1", "pt2"], weight="1 + 0 * M", event_key=["Run", "Event"],
        normalisation={"cross_section": 3.0, "luminosity": 2.0, "sum_weights": "events"},
        chunk_entries=1000,
    )
    return sample(**{**definition, **extra})


def test_groups_share_one_normalisation(tmp_path):
    cfg = zmumu(files_per_group=2)
    files = [fingerprint(p) for p in resolve_files(cfg, DATA)]
    groups = group_files(cfg, files)
    assert [len(g) for g in groups] == [2, 2, 1]
    dirs = []
    for i, group in enumerate(groups):
        out = tmp_path / f"group{i}"
        out.mkdir()
        ingest_group(cfg, group, out, scheduler="sync")
        dirs.append(out)
    total = sum(float(ShardSet(dirs, split, ["M"]).tensors()[1].double().sum())
                for split in ("train", "validation", "test"))
    assert total == pytest.approx(3.0 * 2.0, rel=1e-6)  # xs * lumi over the whole sample


def test_shards_do_not_depend_on_the_scheduler(tmp_path):
    cfg = zmumu(files=["root/uproot-Zmumu-zlib.root"])
    files = [fingerprint(p) for p in resolve_files(cfg, DATA)]
    outs = {}
    for name in ("sync", "threads", "address"):
        out = outs[name] = tmp_path / name
        out.mkdir()
        if name == "address":  # an existing scheduler, reached by its address
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                              dashboard_address=None) as cluster, \
                    dask_scheduler(cluster.scheduler_address) as client:
                ingest_group(cfg, files, out, scheduler=client)
        else:
            with dask_scheduler(name) as scheduler:
                ingest_group(cfg, files, out, scheduler=scheduler)
    assert shard_digests(outs["sync"]) == shard_digests(outs["threads"]) \
        == shard_digests(outs["address"])
    assert sum(pq.read_metadata(p).num_rows for p in outs["address"].rglob("*.parquet")) == 2304
