"""ROOT ingestion on real files written by ROOT: codecs, chunking, trees, jagged, RNTuple."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from ingest_helpers import ROOTS, sample, shard_digests

CODECS = ("lz4", "lzma", "uncompressed", "zlib", "zstd")


def read_split(out, manifest, split):
    shards = [out / s["file"] for s in manifest["splits"][split]["shards"]]
    return pq.read_table(shards).to_pandas() if shards else None


def hzz(codec: str, **extra):
    return sample(
        name="hzz", files=[f"root/uproot-HZZ-{codec}.root"], tree="events",
        branches=["MET_px", "MET_py", "NMuon", "NElectron", "NJet"],
        jagged=[{"branch": "Muon_Px", "rule": "pad", "k": 2},
                {"branch": "Jet_E", "rule": "leading", "fill": -1},
                {"branch": "Electron_E", "rule": "count"}],
        derived={"met": "hypot(MET_px, MET_py)"}, selection="NMuon + NElectron >= 1",
        weight="EventWeight", label="1", chunk_entries=700, **extra,
    )


def test_hzz_codecs_give_identical_shards(ingest):
    results = [ingest(hzz(codec)) for codec in CODECS]
    digests = [shard_digests(out) for _, out in results]
    assert len(digests[0]) == 3 * 4  # 4 chunks of 700 entries, 3 splits
    assert all(d == digests[0] for d in digests[1:])
    manifests = [{k: v for k, v in m.items() if k != "files"} for m, _ in results]
    assert all(m == manifests[0] for m in manifests[1:])
    assert len({m["files"][0]["sha256"] for m, _ in results}) == len(CODECS)


def test_zmumu_codecs_give_identical_shards(ingest):
    digests = []
    for codec in CODECS:
        cfg = sample(name="zmumu", files=[f"root/uproot-Zmumu-{codec}.root"], tree="events",
                     branches=["E1", "pt1", "eta1", "E2", "pt2", "eta2", "Q1", "Q2", "M"],
                     selection='Type != "TT"', event_key=["Run", "Event"], chunk_entries=1000)
        manifest, out = ingest(cfg)
        assert manifest["entries"] == 2304
        digests.append(shard_digests(out))
    assert len(digests[0]) == 9 and all(d == digests[0] for d in digests[1:])


def test_values_match_a_direct_uproot_read(ingest):
    manifest, out = ingest(hzz("zlib"))
    direct = uproot.open(ROOTS / "uproot-HZZ-zlib.root")["events"].arrays()
    keep = (direct.NMuon + direct.NElectron) >= 1
    assert manifest["entries"] == 2421 and manifest["selected"] == int(ak.sum(keep))
    assert manifest["sum_weights"]["all"] == pytest.approx(float(ak.sum(direct.EventWeight)))
    got = np.concatenate([read_split(out, manifest, s)["met"] for s in manifest["splits"]])
    want = np.hypot(ak.to_numpy(direct.MET_px[keep]), ak.to_numpy(direct.MET_py[keep]))
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=1e-6)
    train = read_split(out, manifest, "train")
    assert list(train.columns) == ["MET_px", "MET_py", "NMuon", "NElectron", "NJet", "Muon_Px_0",
                                   "Muon_Px_1", "Jet_E_leading", "Electron_E_count", "met",
                                   "weight", "label"]
    stats = manifest["splits"]["train"]["stats"]["met"]
    assert stats["count"] == len(train)
    assert stats["mean"] == pytest.approx(train["met"].astype("float64").mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(train["met"].astype("float64").std(ddof=0), rel=1e-9)
    assert stats["min"] == pytest.approx(train["met"].min())


def test_million_rows_split_into_chunks_and_reassemble_exactly(ingest):
    cfg = dict(name="big", files=["root/uproot-issue412.root"], tree="test", branches=["b1", "b2"])
    chunked, out_c = ingest(sample(**cfg, chunk_entries=150_000))
    whole, out_w = ingest(sample(**cfg, chunk_entries=1_000_000))
    assert [len(chunked["splits"][s]["shards"]) for s in chunked["splits"]] == [7, 7, 7]
    direct = uproot.open(ROOTS / "uproot-issue412.root")["test"].arrays(library="np")
    parts = []
    for split in ("train", "validation", "test"):
        a, b = read_split(out_c, chunked, split), read_split(out_w, whole, split)
        assert a.equals(b)  # the same rows in the same order, however it was chunked
        parts.append(a)
    assert chunked["rows"] == sum(len(p) for p in parts) == 1_000_000
    b1 = np.concatenate([p["b1"].to_numpy() for p in parts])
    b2 = np.concatenate([p["b2"].to_numpy() for p in parts])
    got, want = np.lexsort((b2, b1)), np.lexsort((direct["b2"], direct["b1"]))
    np.testing.assert_array_equal(b1[got], direct["b1"][want])  # the same multiset of rows
    np.testing.assert_array_equal(b2[got], direct["b2"][want])
    assert chunked["splits"]["train"]["rows"] == pytest.approx(700_000, rel=0.01)


def test_two_trees_in_nested_directories_of_one_file(ingest):
    two, out_two = ingest(sample(
        name="two", files=["root/uproot-nesteddirs.root"], tree="one/two/tree",
        branches=["Int32", "UInt64", "Float32"],
        jagged=[{"branch": "SliceFloat64", "rule": "sum"},
                {"branch": "ArrayInt32", "rule": "pad", "k": 3}]))
    three, out_three = ingest(sample(
        name="three", files=["root/uproot-nesteddirs.root"], tree="three/tree",
        branches=["evt/I32", "evt/F64"], jagged=[{"branch": "evt/StlVecF32", "rule": "count"}]))
    assert two["entries"] == three["entries"] == 100
    direct = uproot.open(ROOTS / "uproot-nesteddirs.root")["one/two/tree"].arrays()
    got = pq.read_table([out_two / s["file"] for s in two["splits"]["train"]["shards"]])
    assert set(got.column_names) >= {"SliceFloat64_sum", "ArrayInt32_0", "ArrayInt32_2"}
    rows = {int(i): (float(s), int(a)) for i, s, a in zip(direct.Int32, ak.sum(direct.SliceFloat64,
                                                                             axis=1),
                                                          direct.ArrayInt32[:, 2])}
    for i, s, a in zip(*(got.column(c).to_pylist()
                         for c in ("Int32", "SliceFloat64_sum", "ArrayInt32_2"))):
        assert rows[i] == (pytest.approx(s), a)
    names = [c["name"] for c in three["schema"]]
    assert names[:3] == ["evt_I32", "evt_F64", "evt_StlVecF32_count"]


def test_nanoaod_jagged_rules_and_runs_normalisation(ingest):
    cfg = sample(
        name="ttbar", files=["root/uproot-issue121.root"], tree="Events", branches=["nMuon"],
        jagged=[{"branch": "Muon_pt", "rule": "leading", "fill": -1},
                {"branch": "Jet_pt", "rule": "pad", "k": 3, "fill": 0}],
        weight="genWeight", event_key=["run", "luminosityBlock", "event"],
        normalisation={"cross_section": 831.76, "luminosity": 1000.0,
                       "sum_weights": "Runs:genEventSumw_"},
    )
    manifest, out = ingest(cfg)
    f = uproot.open(ROOTS / "uproot-issue121.root")
    events = f["Events"].arrays(["event", "Muon_pt", "Jet_pt", "genWeight"])
    sumw = float(f["Runs"]["genEventSumw_"].array(library="np").sum())
    assert manifest["normalisation"]["sum_weights"] == pytest.approx(sumw)
    want = {int(e): (float(m), [float(j) for j in js]) for e, m, js in zip(
        events.event, ak.fill_none(ak.firsts(events.Muon_pt), -1),
        ak.fill_none(ak.pad_none(events.Jet_pt[:, :3], 3, clip=True), 0))}
    seen = 0
    for split in manifest["splits"]:
        table = read_split(out, manifest, split)
        if table is None:
            continue
        for row in table.itertuples():
            # events are identified by their stored values (event is not a stored column)
            matches = [e for e, (m, js) in want.items() if m == pytest.approx(row.Muon_pt_leading)
                       and js == pytest.approx([row.Jet_pt_0, row.Jet_pt_1, row.Jet_pt_2])]
            assert matches
            seen += 1
    assert seen == manifest["rows"] == 40


def test_rntuple(ingest):
    cfg = sample(name="dimuon", files=["root/Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_"
                                       "v1-0-0-0.root"],
                 tree="Events", branches=["nMuon"],
                 jagged=[{"branch": "Muon_pt", "rule": "pad", "k": 2, "fill": 0},
                         {"branch": "Muon_charge", "rule": "sum", "name": "charge"}],
                 selection="nMuon == 2", chunk_entries=300)
    manifest, out = ingest(cfg)
    direct = uproot.open(ROOTS / cfg.files[0].split("/")[-1])["Events"].arrays()
    keep = direct.nMuon == 2
    assert manifest["entries"] == 1000 and manifest["rows"] == int(ak.sum(keep))
    got = pq.read_table([out / s["file"] for split in manifest["splits"].values()
                         for s in split["shards"]]).to_pandas()
    np.testing.assert_allclose(np.sort(got["Muon_pt_0"]),
                               np.sort(ak.to_numpy(direct.Muon_pt[keep][:, 0])))
    np.testing.assert_array_equal(np.sort(got["charge"]),
                                  np.sort(ak.to_numpy(ak.sum(direct.Muon_charge[keep], axis=1))))


def test_empty_file_gives_an_empty_valid_sample(ingest):
    manifest, out = ingest(sample(name="empty", files=["root/uproot-empty.root"], tree="tree",
                                  branches=["x", "y"], selection="x > 0"))
    assert manifest["entries"] == manifest["rows"] == 0
    assert all(s["shards"] == [] and s["rows"] == 0 for s in manifest["splits"].values())
    assert [c["name"] for c in manifest["schema"]] == ["x", "y", "weight", "label"]
    assert list(out.rglob("*.parquet")) == []


def test_split_depends_on_the_event_key_only(ingest):
    def keys(chunk, files):
        cfg = sample(name="z", files=files, tree="events", branches=["Run", "Event", "M"],
                     event_key=["Run", "Event"], chunk_entries=chunk, files_per_group=1)
        manifest, out = ingest(cfg)
        return {s: set(map(tuple, read_split(out, manifest, s)[["Event", "M"]].to_numpy()))
                for s in manifest["splits"]}

    a = keys(100, ["root/uproot-Zmumu-zlib.root"])
    b = keys(5000, ["root/uproot-Zmumu-lz*.root"])
    assert a == b
    assert sum(map(len, a.values())) == 2304
