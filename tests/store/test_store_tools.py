"""`hsbi store` on damaged stores: directories without a manifest, truncated manifests, unknown gc
roots, scratch directories of producers still at work."""

import os
import time

import pytest

from hsbi.cli import main
from hsbi.store import MANIFEST_NAME, Store, make_address
from hsbi.store.lock import lease

A, B = make_address("Demo", {"a": 1}), make_address("Demo", {"b": 1})


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "store")
    with store.writer("Demo", A, {"a": 1}) as out:
        (out / "a.json").write_text("{}")
    with store.writer("Demo", B, {"b": 1}, {"a": A}) as out:
        (out / "b.json").write_text("{}")
    return store


def hsbi(capsys, store: Store, *args: str) -> tuple[int, str, str]:
    code = main(["--store", str(store.local), "store", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_directory_without_manifest_is_reported_and_collected(store, capsys):
    orphan = store.local / "Demo" / ("c" * 24)
    orphan.mkdir()
    (orphan / "half.npz").write_bytes(b"x")
    assert f"Demo/{'c' * 24}" in hsbi(capsys, store, "ls")[1]
    code, out, _ = hsbi(capsys, store, "verify", "--all")
    assert code == 1 and f"INCOMPLETE  Demo/{'c' * 24}: no {MANIFEST_NAME}" in out
    code, out, _ = hsbi(capsys, store, "gc", "--keep", B, "--keep-recent-days", "0")
    assert f"would remove incomplete Demo/{'c' * 24}" in out and orphan.exists()
    hsbi(capsys, store, "gc", "--keep", B, "--keep-recent-days", "0", "--delete")
    assert not orphan.exists() and store.exists("Demo", A) and store.exists("Demo", B)


def test_a_truncated_manifest_is_one_line_in_every_command(store, capsys):
    manifest = store.path("Demo", B) / MANIFEST_NAME
    manifest.write_text(manifest.read_text()[:40])
    code, out, _ = hsbi(capsys, store, "ls")
    assert code == 0 and f"Demo/{B}: manifest is corrupt" in out and A in out
    code, out, err = hsbi(capsys, store, "show", B)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"hsbi: error: artifact Demo/{B}: manifest is corrupt")
    code, out, _ = hsbi(capsys, store, "gc", "--keep-recent-days", "0")
    assert code == 0 and f"would remove corrupt Demo/{B}" in out
    code, out, _ = hsbi(capsys, store, "verify", "--all")
    assert code == 1 and "1 ok, 1 corrupt" in out


@pytest.mark.parametrize("root", ["f" * 24, "not-an-address"])
def test_gc_refuses_an_unknown_root(store, capsys, root):
    code, out, err = hsbi(capsys, store, "gc", "--keep", root, "--keep-recent-days", "0", "--delete")
    assert code == 2 and err.startswith("hsbi: error:") and err.count("\n") == 1 and root in err
    assert store.exists("Demo", A) and store.exists("Demo", B)


def test_gc_keeps_the_scratch_of_a_producer_still_at_work(store, capsys):
    scratch = store.local / ".tmp" / f"Demo-{'d' * 24}-0123abcd"
    scratch.mkdir(parents=True)
    (scratch / "epoch1.ckpt").write_bytes(b"x")
    old = time.time() - 7200
    for path in (scratch / "epoch1.ckpt", scratch):
        os.utime(path, (old, old))
    with lease(store.local / ".locks" / f"Demo-{'d' * 24}.lock", lambda: False):
        hsbi(capsys, store, "gc", "--keep", B, "--delete")
        assert scratch.exists()
    code, out, _ = hsbi(capsys, store, "gc", "--keep", B, "--delete")
    assert not scratch.exists() and "debris" in out
