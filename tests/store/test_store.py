"""The store: atomic writes, verified reads, refused addresses."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hsbi.exceptions import CorruptArtifactError, StoreError
from hsbi.store import MANIFEST_NAME, Store, make_address

ADDR = make_address("Demo", {"a": 1})


def _write(store: Store, address: str = ADDR) -> None:
    with store.writer("Demo", address, {"a": 1}, {"in": "0" * 24}, "v1") as out:
        np.savez(out / "data.npz", x=np.arange(100.0))
        (out / "meta.json").write_text('{"k": 1}')


def test_roundtrip_and_manifest(tmp_path):
    store = Store(tmp_path)
    _write(store)
    art = store.open("Demo", ADDR)
    assert np.array_equal(art.arrays("data.npz")["x"], np.arange(100.0))
    assert art.json("meta.json") == {"k": 1}
    m = art.manifest
    assert m["params"] == {"a": 1} and m["inputs"] == {"in": "0" * 24}
    assert set(m["files"]) == {"data.npz", "meta.json"}
    assert {"created", "host", "packages", "code_version", "digest"} <= set(m)
    assert str(tmp_path) not in (art.path / MANIFEST_NAME).read_text()  # relocatable
    assert "started" not in m and "seconds" not in m  # recorded only when the writer is told


def test_manifest_records_the_production_time(tmp_path):
    import time

    store = Store(tmp_path)
    with store.writer("Demo", ADDR, {"a": 1}, started=time.time() - 5.0) as out:
        (out / "meta.json").write_text("{}")
    m = store.open("Demo", ADDR).manifest
    assert 5.0 <= m["seconds"] < 60 and m["started"] <= m["created"]


def test_exception_inside_write_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.writer("Demo", ADDR, {"a": 1}) as out:
            (out / "partial.bin").write_bytes(b"x" * 1000)
            raise RuntimeError("interrupted")
    assert not store.exists("Demo", ADDR)
    assert not (tmp_path / "Demo" / ADDR).exists()
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_sigkill_during_write_leaves_no_visible_artifact(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, time
        from hsbi.store import Store
        with Store({str(tmp_path)!r}).writer("Demo", {ADDR!r}, {{"a": 1}}) as out:
            (out / "big.bin").write_bytes(b"x" * 10_000_000)
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store = Store(tmp_path)
    assert not store.exists("Demo", ADDR)
    assert not (tmp_path / "Demo").exists()
    _write(store)  # a re-run completes normally next to the debris
    assert store.open("Demo", ADDR).arrays("data.npz")["x"].sum() == 4950


@pytest.mark.parametrize("name", ["data.npz", "meta.json", MANIFEST_NAME])
def test_flipped_byte_is_detected(tmp_path, name):
    store = Store(tmp_path)
    _write(store)
    path = tmp_path / "Demo" / ADDR / name
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptArtifactError, match=f"Demo/{ADDR}.*(rebuild|delete)"):
        store.open("Demo", ADDR)


def test_missing_file_is_detected(tmp_path):
    store = Store(tmp_path)
    _write(store)
    (tmp_path / "Demo" / ADDR / "meta.json").unlink()
    with pytest.raises(CorruptArtifactError, match="meta.json is missing"):
        store.open("Demo", ADDR)


@pytest.mark.parametrize("address", ["../etc", "../" + "0" * 21, "A" * 24, "0" * 23, ""])
def test_addresses_that_could_escape_are_refused(tmp_path, address):
    with pytest.raises(StoreError, match="invalid address"):
        Store(tmp_path).path("Demo", address)
    with pytest.raises(StoreError, match="invalid artifact family"):
        Store(tmp_path).path("../Demo", ADDR)


def test_second_writer_of_same_address_is_idempotent(tmp_path):
    store = Store(tmp_path)
    _write(store)
    first = store.open("Demo", ADDR).manifest["digest"]
    _write(store)  # e.g. a concurrent job finishing later: its copy is discarded
    assert store.open("Demo", ADDR).manifest["digest"] == first


def test_store_moved_to_new_path_still_verifies(tmp_path):
    _write(Store(tmp_path / "a"))
    (tmp_path / "a").rename(tmp_path / "b")
    assert Store(tmp_path / "b").open("Demo", ADDR).json("meta.json") == {"k": 1}
