"""Ingestion: TNtuples are trees, a sample whose selection keeps nothing is empty (with a
warning) unless every sample is, and a list of trees is refused with what to do instead."""

from __future__ import annotations

import pytest
import uproot

from ingest_helpers import DATA, sample
from hsbi.config.loader import load_config
from hsbi.data.ingest import ShardSet, fingerprint, inspect_file, resolve_files
from hsbi.exceptions import ConfigError, DataError, EmptySampleWarning

HZZ = dict(name="hzz", files=["root/uproot-HZZ-zlib.root"], tree="events",
           branches=["MET_px", "NMuon"], weight="EventWeight")


class _AsNtuple:
    """A ROOT file whose trees report the class TNtuple, as the HEPData example's ``ntuple``:
    no TNtuple file is among the test files (uproot reads a TNtuple as a TTree)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def classnames(self) -> dict:
        return {k: "TNtuple" if c == "TTree" else c for k, c in self.handle.classnames().items()}

    def __getitem__(self, key):
        return self.handle[key]


def test_a_tntuple_is_a_tree(monkeypatch):
    real = uproot.open
    monkeypatch.setattr(uproot, "open", lambda *a, **k: _AsNtuple(real(*a, **k)))
    cfg = sample(**HZZ)
    (file,) = [fingerprint(p) for p in resolve_files(cfg, DATA)]
    schema = inspect_file(cfg, file)
    assert schema.entries == 2421 and set(schema.columns) >= {"MET_px", "NMuon"}


def test_a_selection_that_keeps_nothing_gives_an_empty_sample_with_a_warning(ingest):
    with pytest.warns(EmptySampleWarning, match="the selection 'NMuon > 100' keeps none of the 2421 events"):
        manifest, out = ingest(sample(**{**HZZ, "name": "bkg", "selection": "NMuon > 100"}))
    assert manifest["entries"] == 2421 and manifest["rows"] == 0
    signal, signal_out = ingest(sample(**{**HZZ, "name": "sig", "label": 1}))
    x, w, y = ShardSet([out, signal_out], "train").tensors()
    assert len(x) == signal["splits"]["train"]["rows"] > 0


def test_every_sample_empty_is_an_error(ingest):
    with pytest.warns(EmptySampleWarning):
        _, a = ingest(sample(**{**HZZ, "name": "a", "selection": "NMuon > 100"}))
        _, b = ingest(sample(**{**HZZ, "name": "b", "selection": "NMuon < 0"}))
    with pytest.raises(DataError, match="every sample is empty after its selection: 'a' .*'NMuon > 100'.*'b'"):
        ShardSet([a, b], "train")


def test_a_list_of_trees_says_one_sample_per_tree(tmp_path):
    path = tmp_path / "trees.yaml"
    path.write_text("samples: [{name: a, files: [x.root], tree: [t1, t2], branches: [x]}]\n")
    with pytest.raises(ConfigError, match=r"samples\[0\].tree' = \['t1', 't2'\]: expected a string.*"
                                          r"several trees need several samples"):
        load_config(path)
