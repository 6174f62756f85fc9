"""Parquet ingestion (HiggsML 2014 extract), splits, statistics, and shards -> tensors."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ingest_helpers import HIGGS, sample
from hsbi.config.samples import SplitConfig
from hsbi.data.ingest import ColumnStats, ShardSet, TensorBatches, assign_splits, event_hash

FEATURES = ["DER_mass_vis", "DER_pt_h", "PRI_tau_pt", "PRI_lep_pt", "PRI_met", "PRI_jet_num"]


def higgs(**extra):
    return sample(name="higgsml", process="HiggsML 2014",
                  files=["higgs/higgsml2014_v2_prefix22889.parquet"], branches=FEATURES,
                  derived={"has_mmc": "DER_mass_MMC > -999"}, weight="Weight",
                  label='Label == "s"', event_key=["EventId"], **extra)


@pytest.fixture
def higgs_shards(ingest):
    return ingest(higgs(chunk_entries=4000))


def test_higgs_ingests_with_labels_and_weights(higgs_shards):
    manifest, out = higgs_shards
    table = pq.read_table(HIGGS).to_pandas()
    assert manifest["entries"] == manifest["rows"] == len(table) == 22889
    assert manifest["sum_weights"]["all"] == pytest.approx(table["Weight"].sum())
    ss = ShardSet([out], split="train", normalise=False)
    x, w, y = ss.tensors()
    assert x.shape == (manifest["splits"]["train"]["rows"], len(FEATURES) + 1)
    assert x.dtype == torch.float32 and x.is_contiguous()
    signal = float(y.float().mean())
    assert signal == pytest.approx((table["Label"] == "s").mean(), abs=0.02)
    assert float(w.double().sum()) == pytest.approx(manifest["splits"]["train"]["sum_weights"],
                                                    rel=1e-5)
    rows = [ShardSet([out], split=s, features=["PRI_tau_pt"], normalise=False).tensors()
            for s in ("train", "validation", "test")]
    assert sum(len(r[0]) for r in rows) == len(table)
    # labels and weights travel with their events
    sig_w = sum(float(r[1][r[2] == 1].double().sum()) for r in rows)
    assert sig_w == pytest.approx(table.loc[table["Label"] == "s", "Weight"].sum(), rel=1e-5)


def test_split_is_independent_of_chunking(ingest):
    a, out_a = ingest(higgs(chunk_entries=1000))
    b, out_b = ingest(higgs(chunk_entries=50000))
    for split in ("train", "validation", "test"):
        ta = pq.read_table([out_a / s["file"] for s in a["splits"][split]["shards"]])
        tb = pq.read_table([out_b / s["file"] for s in b["splits"][split]["shards"]])
        assert ta.equals(tb)
        for col in FEATURES:  # statistics merged over 23 chunks equal those of one chunk
            sa, sb = a["splits"][split]["stats"][col], b["splits"][split]["stats"][col]
            assert sa["count"] == sb["count"] and sa["min"] == sb["min"]
            assert sa["mean"] == pytest.approx(sb["mean"], rel=1e-12)
            assert sa["std"] == pytest.approx(sb["std"], rel=1e-9)


def test_event_hash_and_split_assignment():
    rng = np.random.default_rng(1)
    run, event = rng.integers(1, 5, 100_000), rng.permutation(100_000)
    h = event_hash([("run", run), ("event", event)], seed=0, n=len(run))
    perm = rng.permutation(len(run))
    h_perm = event_hash([("run", run[perm]), ("event", event[perm])], seed=0, n=len(run))
    np.testing.assert_array_equal(h[perm], h_perm)  # per event, not per position
    codes = assign_splits(h, SplitConfig(train=0.6, validation=0.3, test=0.1))
    np.testing.assert_allclose(np.bincount(codes) / len(codes), [0.6, 0.3, 0.1], atol=0.005)
    other = assign_splits(event_hash([("run", run), ("event", event)], 1, len(run)),
                          SplitConfig())
    assert 0.4 < np.mean(other == assign_splits(h, SplitConfig())) < 0.7  # the seed reshuffles


def test_column_stats_merge_exactly():
    x = np.random.default_rng(2).normal(3.0, 2.0, 10_001)
    merged = ColumnStats()
    for part in np.array_split(x, 7):
        merged = merged.merge(ColumnStats.of(part))
    assert merged.count == len(x)
    assert merged.mean == pytest.approx(x.mean(), rel=1e-13)
    assert merged.std == pytest.approx(x.std(), rel=1e-12)
    assert ColumnStats.from_json(merged.to_json()) == merged


def test_streaming_batches_cover_the_split_once(higgs_shards):
    manifest, out = higgs_shards
    ss = ShardSet([out], split="train", features=["PRI_tau_pt", "PRI_met"], normalise=False)
    x, w, y = ss.tensors()
    streamed = list(ss.stream(batch_size=1000, shuffle=True, seed=3))
    assert all(len(b.x) <= 1000 for b in streamed)
    xs = torch.cat([b.x for b in streamed])
    assert xs.shape == x.shape

    def rows(t):
        a = t.numpy()
        return a[np.lexsort((a[:, 1], a[:, 0]))]

    np.testing.assert_array_equal(rows(xs), rows(x))
    again = torch.cat([b.x for b in ss.stream(batch_size=1000, shuffle=True, seed=3)])
    torch.testing.assert_close(again, xs)  # reproducible order
    mean, std = ss.standardisation()
    np.testing.assert_allclose(mean, x.double().mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(std, x.double().std(0, unbiased=False).numpy(), rtol=1e-4)


def test_tensor_batches_are_gathers_over_contiguous_tensors():
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    w, y = torch.ones(10), torch.arange(10)
    batches = list(TensorBatches(x, w, y, batch_size=4))
    assert [len(b.y) for b in batches] == [4, 4, 2]
    assert len(TensorBatches(x, w, y, batch_size=4, drop_last=True)) == 2
    shuffled = torch.cat([b.y for b in TensorBatches(x, w, y, 3, shuffle=True, seed=1)])
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))
    for b in TensorBatches(x, w, y, 3, shuffle=True):
        torch.testing.assert_close(b.x[:, 0], 2 * b.y.float())


def test_normalisation_uses_cross_section_luminosity_and_sum_of_weights(ingest):
    manifest, out = ingest(higgs(normalisation={"cross_section": 2.0, "luminosity": 10.0,
                                                "sum_weights": "events"}))
    total = manifest["sum_weights"]["all"]
    weights = []
    for split in ("train", "validation", "test"):
        _, w, _ = ShardSet([out], split=split, features=["PRI_met"]).tensors()
        weights.append(w.double().sum())
    assert float(sum(weights)) == pytest.approx(2.0 * 10.0, rel=1e-5)  # xs * lumi, all splits
    assert manifest["normalisation"]["sum_weights"] == pytest.approx(total)
