"""IngestSamples through a real `law run`: shards in the store, addresses, one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import luigi
import pytest

from ingest_helpers import DATA, ROOTS
from hsbi.data.ingest import MANIFEST, ShardSet
from hsbi.store import Store

CONFIG = DATA / "configs" / "ingest.yaml"


def artifacts(store_root: Path) -> list[Path]:
    family = store_root / "IngestSamples"
    return sorted(p for p in family.iterdir() if p.is_dir()) if family.exists() else []


def test_law_run_writes_verified_shards_with_a_local_cluster(law_run, store_root):
    result = law_run("IngestSamples", "--config", str(CONFIG), "--samples", "hzz,higgsml",
                     "--dask-workers", "1", "--dask-memory", "1GiB", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    found = artifacts(store_root)
    assert len(found) == 2
    store = Store(store_root)
    manifests = [store.open("IngestSamples", p.name) for p in found]
    samples = {m.json(MANIFEST)["sample"]: m for m in manifests}
    assert set(samples) == {"hzz", "higgsml"}
    assert samples["hzz"].json(MANIFEST)["selected"] == 2366
    x, w, y = ShardSet([samples["higgsml"].path], split="validation").tensors()
    assert x.shape[1] == 7 and set(y.tolist()) == {0, 1}
    again = law_run("IngestSamples", "--config", str(CONFIG), "--samples", "hzz,higgsml",
                    "--dask-scheduler", "sync")
    assert again.returncode == 0 and artifacts(store_root) == found


def _write_config(path: Path, files: str, selection: str = "NMuon >= 1") -> Path:
    path.write_text(
        "samples:\n"
        f"  - {{name: hzz, files: ['{files}'], tree: events, branches: [MET_px, NMuon],\n"
        f"     selection: '{selection}', weight: EventWeight, label: 1}}\n"
    )
    return path


def _address(config: Path, **params) -> str:
    from workflows.ingest import IngestSamples

    luigi.task_register.Register.clear_instance_cache()
    return IngestSamples(config=str(config), branch=0, **params).address


def test_address_follows_file_content_and_definition_not_location(tmp_path, store_root):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(ROOTS / "uproot-HZZ-zlib.root", tmp_path / "a" / "hzz.root")
    shutil.copy(ROOTS / "uproot-HZZ-zlib.root", tmp_path / "b" / "hzz.root")
    base = _address(_write_config(tmp_path / "c1.yaml", "a/*.root"))
    assert _address(_write_config(tmp_path / "c2.yaml", "b/hzz.root")) == base  # moved
    assert _address(tmp_path / "c1.yaml", dask_scheduler="threads", dask_workers=5) == base
    assert _address(_write_config(tmp_path / "c3.yaml", "a/*.root", "NMuon >= 2")) != base
    shutil.copy(ROOTS / "uproot-HZZ-lz4.root", tmp_path / "a" / "hzz.root")  # same events
    assert _address(tmp_path / "c1.yaml") != base


def test_bad_input_ends_law_run_with_one_line_and_no_artifact(law_run, store_root, tmp_path):
    shutil.copy(ROOTS / "uproot-HZZ-zlib.root", tmp_path / "hzz.root")
    config = _write_config(tmp_path / "bad.yaml", "hzz.root", "NMuon > 99")
    result = law_run("IngestSamples", "--config", str(config), "--dask-scheduler", "sync")
    assert result.returncode != 0
    lines = [ln for ln in result.stdout.splitlines() if "hsbi: error:" in ln]
    assert lines and "the selection 'NMuon > 99' keeps none of the 2421 events" in lines[0]
    assert "hzz.root" in lines[0] and "Traceback" not in result.stdout
    assert artifacts(store_root) == []
    debris = store_root / ".tmp"
    assert not debris.exists() or list(debris.iterdir()) == []

    missing = _write_config(tmp_path / "missing.yaml", "nope.root")
    result = law_run("IngestSamples", "--config", str(missing), "--dask-scheduler", "sync")
    assert result.returncode != 0
    assert "hsbi: error: IngestSamples: sample 'hzz': file " in result.stdout
    assert "nope.root does not exist" in result.stdout and "Traceback" not in result.stdout


@pytest.mark.parametrize("args, match", [
    (("--samples", "nope"), "no sample 'nope' in the config"),
    (("--dask-scheduler", "mars"), "dask scheduler 'mars'"),
])
def test_bad_parameters(law_run, store_root, args, match):
    result = law_run("IngestSamples", "--config", str(CONFIG), *args)
    assert result.returncode != 0 and match in result.stdout, result.stdout[-2000:]
    assert artifacts(store_root) == []
