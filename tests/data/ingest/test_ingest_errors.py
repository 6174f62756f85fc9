"""Bad input: one error naming file / tree / branch / column and what was expected, and nothing
left in the store."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import uproot

from ingest_helpers import HIGGS, ROOTS, assert_store_empty, sample
from hsbi.config.loader import load_config
from hsbi.exceptions import ConfigError, DataError, EmptySampleWarning

HZZ = dict(name="hzz", files=["root/uproot-HZZ-zlib.root"], tree="events",
           branches=["MET_px", "NMuon"], weight="EventWeight")


def fails(ingest, cfg, match, base=None):
    kwargs = {"base": base} if base is not None else {}
    with pytest.raises(DataError, match=match) as err:
        ingest(cfg, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert_store_empty(ingest.store)
    return message


def test_missing_file(ingest):
    msg = fails(ingest, sample(**{**HZZ, "files": ["root/nope.root"]}), "does not exist")
    assert "nope.root" in msg
    fails(ingest, sample(**{**HZZ, "files": ["root/nope-*.root"]}), "matches no file")


def test_truncated_root_file(ingest, tmp_path):
    data = (ROOTS / "uproot-HZZ-zlib.root").read_bytes()
    (tmp_path / "cut.root").write_bytes(data[: len(data) // 2])
    msg = fails(ingest, sample(**{**HZZ, "files": ["cut.root"]}), "truncated ROOT file",
                base=tmp_path)
    assert "cut.root" in msg and str(len(data) // 2) in msg


def test_non_root_file_with_a_root_name(ingest, tmp_path):
    shutil.copy(HIGGS, tmp_path / "higgs.root")
    msg = fails(ingest, sample(**{**HZZ, "files": ["higgs.root"]}), "not a ROOT file",
                base=tmp_path)
    assert "higgs.root" in msg and "b'PAR1" in msg


def test_missing_tree(ingest):
    msg = fails(ingest, sample(**{**HZZ, "tree": "event"}), "no tree or RNTuple 'event'")
    assert "did you mean 'events'" in msg and "uproot-HZZ-zlib.root" in msg


def test_missing_branch(ingest):
    msg = fails(ingest, sample(**{**HZZ, "branches": ["MET_pz"]}), "no branch 'MET_pz'")
    assert "tree 'events'" in msg and "uproot-HZZ-zlib.root" in msg
    fails(ingest, sample(**{**HZZ, "selection": "Nmuon > 0"}), "no branch 'Nmuon'.*'NMuon'")
    msg = fails(ingest, sample(name="h", files=["higgs/*.parquet"], branches=["PRI_met_pt"]),
                "no column 'PRI_met_pt'.*did you mean .*'PRI_met'")
    assert "higgsml2014_v2_prefix22889.parquet" in msg


def test_non_parquet_file_with_a_parquet_name(ingest, tmp_path):
    shutil.copy(ROOTS / "uproot-empty.root", tmp_path / "events.parquet")
    msg = fails(ingest, sample(name="p", files=["events.parquet"], branches=["x"]),
                "not a readable Parquet file", base=tmp_path)
    assert "events.parquet" in msg


@pytest.mark.parametrize("definition, match", [
    (dict(tree="three/tree", branches=["evt/I32"],
          jagged=[{"branch": "evt/StlVecStr", "rule": "count"}]),
     r"branch 'evt/StlVecStr' has the unsupported type var \* string"),
    (dict(tree="one/two/tree", branches=["SliceFloat32"]),
     "branch 'SliceFloat32' is jagged .*reduce it with a jagged rule"),
    (dict(tree="one/two/tree", branches=["Str"]), "branch 'Str' has the type string"),
])
def test_unsupported_branch_type(ingest, definition, match):
    cfg = sample(name="n", files=["root/uproot-nesteddirs.root"], **definition)
    assert "uproot-nesteddirs.root" in fails(ingest, cfg, match)


def test_schema_that_differs_between_files(ingest, tmp_path):
    for name, dtype in (("a.root", np.float32), ("b.root", np.float64)):
        with uproot.recreate(tmp_path / name) as f:
            f["t"] = {"x": np.arange(10, dtype=dtype)}
    cfg = sample(name="s", files=["*.root"], tree="t", branches=["x"])
    msg = fails(ingest, cfg, "branch 'x' is float32 in .*a.root but float64 in .*b.root",
                base=tmp_path)
    assert "expected the same schema" in msg


def test_nonfinite_feature_fails_or_is_dropped_and_counted(ingest):
    definition = dict(name="higgs", files=["higgs/higgsml2014_v2_prefix22889.parquet"],
                      branches=["PRI_tau_pt"], derived={"log_mmc": "log(DER_mass_MMC)"},
                      weight="Weight", label='Label == "s"', event_key=["EventId"],
                      chunk_entries=5000)
    msg = fails(ingest, sample(**definition), r"column 'log_mmc' has \d+ NaN/inf")
    assert "higgsml2014_v2_prefix22889.parquet" in msg and "nonfinite: drop" in msg
    manifest, _ = ingest(sample(**definition, nonfinite="drop"))
    import pyarrow.parquet as pq

    mmc = pq.read_table(HIGGS, columns=["DER_mass_MMC"]).column(0).to_numpy()
    assert manifest["dropped_nonfinite"] == {"log_mmc": int((mmc <= 0).sum())}
    assert manifest["rows"] == manifest["selected"] - int((mmc <= 0).sum())


def test_nan_in_a_root_branch(ingest, tmp_path):
    x = np.linspace(0, 1, 50)
    x[17] = np.nan
    with uproot.recreate(tmp_path / "nan.root") as f:
        f["t"] = {"x": x, "w": np.ones(50)}
    msg = fails(ingest, sample(name="s", files=["nan.root"], tree="t", branches=["x"]),
                "column 'x' has 1 NaN/inf value.*first at entry 17", base=tmp_path)
    assert "nan.root" in msg and "tree 't'" in msg


def test_selection_that_keeps_nothing(ingest):
    """An empty sample with a warning (a process may have no events in a region); every sample
    empty is an error where the samples are combined (test_ingest_audit.py)."""
    with pytest.warns(EmptySampleWarning, match="the selection 'NMuon > 100' keeps none of the 2421 events") as rec:
        manifest, _ = ingest(sample(**{**HZZ, "selection": "NMuon > 100"}))
    assert "uproot-HZZ-zlib.root" in str(rec[0].message) and manifest["rows"] == 0


def test_a_selection_must_be_boolean(ingest):
    fails(ingest, sample(**{**HZZ, "selection": "NMuon * 2"}), "expected a boolean expression")


@pytest.mark.parametrize("text, match", [
    ("samples: [{files: [x.root], tree: t, branches: [x]}]", "missing config key 'name'"),
    ("samples: [{name: a, files: [x.root], branches: [x], bogus: 1}]",
     "unknown config key 'samples\\[0\\].bogus'"),
    ("samples: [{name: a, files: [x.root], branches: [x], nonfinite: skip}]",
     "samples.a.nonfinite.*expected one of"),
    ("samples: [{name: a, files: [x.root], jagged: [{branch: j, rule: first}]}]",
     "jagged.rule.*'first'"),
    ("samples: [{name: a, files: [x.root], branches: [x], derived: {y: 'x.real'}}]", None),
    ("samples: [{name: a, files: [x.root], branches: [x], split: {train: 0.9}}]",
     "add up to 1"),
])
def test_bad_sample_definitions_name_the_key(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    if match is None:  # attribute access is refused when the expression is first parsed
        from hsbi.data.ingest.expressions import names_in

        cfg = load_config(path)
        with pytest.raises(ConfigError, match=re.escape("Attribute is not allowed")):
            names_in(cfg.samples[0].derived["y"])
        return
    with pytest.raises(ConfigError, match=match):
        load_config(path)
