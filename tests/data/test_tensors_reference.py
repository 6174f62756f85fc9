"""ShardSet.tensors / stream against a plain pandas reference, bit for bit: several samples with
their own normalisation factors, several shards and row groups per sample, feature columns that
need a cast to float32, an empty split, and a real ingested group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hsbi.config.loader import _build
from hsbi.config.samples import SampleConfig
from hsbi.data.ingest import MANIFEST, ShardSet, fingerprint, ingest_group, resolve_files
from hsbi.data.ingest.split import SPLITS

DATA = Path(__file__).resolve().parent
FEATURES = ["a", "b", "c", "d"]


def _table(rng: np.random.Generator, n: int, label_type: str = "int64") -> pa.Table:
    """Features of several types (float32, float64 with values float32 rounds, overflows or
    keeps as NaN/inf/-0/subnormal, int32, bool), float64 weights, integer labels."""
    b = rng.normal(0, 1e3, n) * (1 + 1e-9)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 1e300, 3.4028235677973366e38,
                        16777217.0])
    b[: min(n, len(special))] = special[: min(n, len(special))]
    return pa.table({
        "a": pa.array(rng.normal(size=n).astype(np.float32)),
        "b": pa.array(b),
        "c": pa.array(rng.integers(-1000, 1000, n).astype(np.int32)),
        "d": pa.array(rng.random(n) < 0.5),
        "extra": pa.array(rng.normal(size=n)),  # not a selected column
        "weight": pa.array(rng.exponential(1.0, n) * rng.choice([1.0, -0.5], n)),
        "label": pa.array(rng.integers(0, 2, n), type=pa.type_for_alias(label_type)),
    })


def _group(root: Path, name: str, sample: str, shards: dict[str, list[pa.Table]],
           normalisation: dict, row_group_size: int = 1000) -> Path:
    """An artifact directory as ingestion writes one: shards per split and the manifest."""
    d = root / name
    splits = {}
    for split in SPLITS:
        entries = []
        for i, table in enumerate(shards.get(split, [])):
            rel = f"{split}/part-{i:04d}-{i * 10**6:012d}.parquet"
            (d / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(table, d / rel, row_group_size=row_group_size, compression="lz4")
            entries.append({"file": rel, "rows": table.num_rows})
        splits[split] = {"rows": sum(e["rows"] for e in entries), "shards": entries, "stats": {}}
    rows = sum(s["rows"] for s in splits.values())
    schema = [{"name": c, "role": "feature", "dtype": ""} for c in [*FEATURES, "extra"]]
    schema += [{"name": "weight", "role": "weight", "dtype": "float64"},
               {"name": "label", "role": "label", "dtype": "int64"}]
    manifest = {"sample": sample, "definition": {"selection": None}, "entries": rows,
                "rows": rows, "schema": schema, "normalisation": normalisation,
                "splits": splits}
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST).write_text(json.dumps(manifest))
    return d


def _reference(dirs: list[Path], split: str, features: list[str], factors: list[float]):
    """The split read shard by shard with pandas, cast with numpy, concatenated in order."""
    xs, ws, ys = [], [], []
    for d, factor in zip(dirs, factors):
        manifest = json.loads((d / MANIFEST).read_text())
        for shard in manifest["splits"][split]["shards"]:
            df = pd.read_parquet(d / shard["file"])
            x = np.empty((len(df), len(features)), np.float32)
            with np.errstate(over="ignore"):  # float64 beyond float32: inf, as arrow casts
                for j, f in enumerate(features):
                    x[:, j] = df[f].to_numpy().astype(np.float32)
            xs.append(x)
            ws.append((df["weight"].to_numpy(np.float64) * factor).astype(np.float32))
            ys.append(df["label"].to_numpy().astype(np.int64))
    if not xs:
        return (np.empty((0, len(features)), np.float32), np.empty(0, np.float32),
                np.empty(0, np.int64))
    return np.concatenate(xs), np.concatenate(ws), np.concatenate(ys)


def _assert_identical(got, want) -> None:
    for g, r, dtype in zip(got, want, (torch.float32, torch.float32, torch.int64)):
        assert isinstance(g, torch.Tensor) and g.dtype == dtype and g.is_contiguous()
        assert tuple(g.shape) == r.shape
        a = g.numpy()
        # bit for bit, NaN included
        assert np.array_equal(a.view(f"u{a.itemsize}"), r.view(f"u{r.itemsize}"))


@pytest.fixture
def groups(tmp_path: Path) -> list[Path]:
    """Three groups of two samples (one sample in two groups, which share its sum of weights),
    with several shards of several row groups, one group without a validation split."""
    rng = np.random.default_rng(7)
    sig = _group(tmp_path, "sig-1", "signal", {
        "train": [_table(rng, 2500), _table(rng, 17), _table(rng, 1)],
        "validation": [_table(rng, 300)],
        "test": [_table(rng, 40)],
    }, {"cross_section": 1.7, "luminosity": 139.0, "sum_weights": 321.5})
    sig2 = _group(tmp_path, "sig-2", "signal", {
        "train": [_table(rng, 999)],
        "test": [_table(rng, 5)],
    }, {"cross_section": 1.7, "luminosity": 139.0, "sum_weights": 78.25}, row_group_size=100)
    bkg = _group(tmp_path, "bkg", "background", {
        "train": [_table(rng, 1234, "int32"), _table(rng, 4321)],
        "validation": [_table(rng, 77)],
        "test": [_table(rng, 3)],
    }, {"cross_section": 0.3, "luminosity": 139.0, "sum_weights": None})
    return [sig, sig2, bkg]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("features", [FEATURES, ["b"], ["d", "a", "extra"], []])
def test_tensors_match_reference(groups, split, features):
    ss = ShardSet(groups, split, features)
    total = 321.5 + 78.25
    factors = [1.7 * 139.0 / total, 1.7 * 139.0 / total, 0.3 * 139.0]
    assert ss.factors == factors
    got = ss.tensors()
    _assert_identical(got, _reference(groups, split, features, factors))
    assert len(got[0]) == ss.rows


def test_unnormalised_and_single_group(groups):
    for dirs in ([groups[2]], groups[:2], groups):
        ss = ShardSet(dirs, "train", FEATURES, normalise=False)
        _assert_identical(ss.tensors(), _reference(dirs, "train", FEATURES, [1.0] * len(dirs)))


def test_stream_without_shuffle_is_tensors_in_batches(groups):
    ss = ShardSet(groups, "train", FEATURES)
    x, w, y = ss.tensors()
    batches = list(ss.stream(batch_size=500))
    for got, want in zip((torch.cat([getattr(b, k) for b in batches]) for k in "xwy"), (x, w, y)):
        assert torch.equal(got.view(torch.int32 if got.dtype == torch.float32 else got.dtype),
                           want.view(torch.int32 if want.dtype == torch.float32 else want.dtype))
    shuffled = list(ss.stream(batch_size=500, shuffle=True, seed=1))
    assert sum(len(b.x) for b in shuffled) == len(x)
    assert torch.equal(torch.cat([b.y for b in shuffled]).sort().values, y.sort().values)


def test_empty_split(tmp_path: Path):
    rng = np.random.default_rng(1)
    a = _group(tmp_path, "a", "a", {"train": [_table(rng, 10)]},
               {"cross_section": 1.0, "luminosity": 1.0, "sum_weights": 2.0})
    b = _group(tmp_path, "b", "b", {"train": [_table(rng, 20)]},
               {"cross_section": 1.0, "luminosity": 1.0, "sum_weights": None})
    x, w, y = ShardSet([a, b], "validation", FEATURES).tensors()
    assert x.shape == (0, 4) and w.shape == (0,) and y.shape == (0,)
    assert (x.dtype, w.dtype, y.dtype) == (torch.float32, torch.float32, torch.int64)
    assert list(ShardSet([a, b], "validation", FEATURES).stream(batch_size=4)) == []
    # a group with an empty split next to one with rows
    _assert_identical(ShardSet([a, b], "train", FEATURES).tensors(),
                      _reference([a, b], "train", FEATURES, [0.5, 1.0]))


def test_cast_errors_as_arrow_casts(tmp_path: Path):
    """An integer feature float32 cannot hold exactly fails as arrow's safe cast does."""
    rng = np.random.default_rng(2)
    t = _table(rng, 10).set_column(2, "c", pa.array(np.full(10, 2**24 + 1, dtype=np.int64)))
    d = _group(tmp_path, "g", "g", {"train": [t]},
               {"cross_section": 1.0, "luminosity": 1.0, "sum_weights": None})
    with pytest.raises(pa.ArrowInvalid):
        ShardSet([d], "train", ["c"]).tensors()
    _assert_identical(ShardSet([d], "train", ["a"]).tensors(),
                      _reference([d], "train", ["a"], [1.0]))


def test_real_ingested_group(tmp_path: Path):
    """HiggsML extract through ingestion (sync scheduler): shards as ingestion writes them."""
    cfg = _build(SampleConfig, {
        "name": "higgsml", "process": "HiggsML 2014",
        "files": ["higgs/higgsml2014_v2_prefix22889.parquet"],
        "branches": ["DER_mass_vis", "PRI_tau_pt", "PRI_met", "PRI_jet_num"],
        "derived": {"has_mmc": "DER_mass_MMC > -999"}, "weight": "Weight",
        "label": 'Label == "s"', "event_key": ["EventId"], "chunk_entries": 3000,
        "normalisation": {"cross_section": 2.5, "luminosity": 10.0, "sum_weights": "events"}},
        "samples[0]")
    out = tmp_path / "higgs"
    out.mkdir()
    manifest = ingest_group(cfg, [fingerprint(p) for p in resolve_files(cfg, DATA)], out,
                            scheduler="sync")
    features = [c["name"] for c in manifest["schema"] if c["role"] == "feature"]
    for split in SPLITS:
        ss = ShardSet([out], split)
        assert ss.features == features and len(ss.shards()) > 1
        _assert_identical(ss.tensors(), _reference([out], split, features, ss.factors))
