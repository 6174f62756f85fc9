"""Fault injection on real runs: concurrency, SIGKILL, corruption, full disk, moves, pickles."""

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from hsbi.exceptions import CorruptArtifactError, StoreError
from hsbi.store import MANIFEST_NAME, Store, make_address
from helpers import MICRO_CONFIG, ROOT, law_cmd, law_env, run_micro

pytestmark = pytest.mark.slow


def _visible_artifacts_are_whole(root: Path) -> int:
    """Every artifact directory in the store verifies; returns how many there are."""
    store = Store(root)
    count = 0
    for family in store.families():
        for path in (root / family).iterdir():
            assert (path / MANIFEST_NAME).is_file(), f"partial artifact visible: {path}"
            store.open(family, path.name)
            count += 1
    return count


def _result(root: Path) -> dict:
    (address,) = Store(root).addresses("InferProfileLikelihood")
    return Store(root).open("InferProfileLikelihood", address).json("result.json")


def test_concurrent_runs_produce_each_artifact_once(tmp_path, filled_store):
    store = tmp_path / "store"
    cmd = law_cmd("InferProfileLikelihood", "--config", str(MICRO_CONFIG))
    procs = [
        subprocess.Popen(cmd, env=law_env(store), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    trained = sum(out.count("TrainEstimator member 0 signal: epoch 1/1") for out in outputs)
    assert trained == 1, "the ensemble member was trained more than once"
    assert _visible_artifacts_are_whole(store) == 8
    assert _result(store) == _result(filled_store)
    assert not any((store / ".locks").iterdir())


def test_sigkill_at_random_moments(tmp_path, filled_store):
    """20 runs killed with SIGKILL at seeded random moments, on 5 DAG variants sharing one
    store; after each kill no partial artifact is visible; then every variant re-runs to
    completion, and the untouched variant's result equals the one of an uninterrupted run."""
    rng = random.Random(20261122)
    store = tmp_path / "store"
    env = law_env(store)

    def cmd(variant: int) -> list[str]:
        extra = ["--set", f"simulation.seed={10 + variant}"] if variant else []  # 0: as config
        return law_cmd("InferProfileLikelihood", "--config", str(MICRO_CONFIG), *extra)

    for cycle in range(20):
        proc = subprocess.Popen(cmd(cycle % 5), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.5, 7.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _visible_artifacts_are_whole(store)
    for variant in range(5):
        rerun = subprocess.run(cmd(variant), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stdout[-3000:]
    counts = {f: len(Store(store).addresses(f)) for f in Store(store).families()}
    # per variant: samples, member, ensemble, 2 toy points, belt, result; the observed dataset is shared
    assert counts == {"SimulateSamples": 5, "SimulateObserved": 1, "TrainEstimator": 5,
                      "NeymanToys": 10, "ConfidenceBelt": 5, "Ensemble": 5, "InferProfileLikelihood": 5}, counts
    _visible_artifacts_are_whole(store)
    variant0 = [a for f, a in Store(store).artifacts()]
    reference = [a for f, a in Store(filled_store).artifacts()]
    assert set(reference) <= set(variant0), "addresses differ from an uninterrupted run"
    ref_infer = Store(filled_store).addresses("InferProfileLikelihood")[0]
    assert Store(store).open("InferProfileLikelihood", ref_infer).json("result.json") == _result(filled_store)


def test_fifty_single_byte_corruptions_are_detected(store_copy):
    store = Store(store_copy)
    files = sorted(
        (family, address, path)
        for family, address in store.artifacts()
        for path in (store_copy / family / address).rglob("*") if path.is_file()
    )
    kinds = {p.suffix for _, _, p in files}
    assert {".npz", ".json", ".safetensors", ".png"} <= kinds
    rng = random.Random(50)
    for _ in range(50):
        family, address, path = rng.choice(files)
        original = path.read_bytes()
        blob = bytearray(original)
        blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(blob))
        with pytest.raises(CorruptArtifactError) as err:
            store.open(family, address)
        message = str(err.value)
        assert f"{family}/{address}" in message and "--remove-output" in message and "gc" in message
        path.write_bytes(original)
    assert _visible_artifacts_are_whole(store_copy) == 8


def test_full_disk_gives_a_clear_error_and_no_partial_artifact(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                        capture_output=True).returncode == 0
    if not ok:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        store = Store(mount / "store")
        address = make_address("Big", {})
        with pytest.raises(StoreError, match=r"cannot write artifact Big/\w+ under .*: no space left on device .*; nothing was stored"):
            with store.writer("Big", address, {}) as out:
                np.save(out / "big.npy", np.zeros(1_000_000))
        assert not store.exists("Big", address)
        assert not (mount / "store" / "Big").exists()
        assert not any((mount / "store" / ".tmp").iterdir())
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_moved_store_works_unchanged(tmp_path, filled_store):
    moved = tmp_path / "elsewhere" / "store"
    shutil.copytree(filled_store, moved)
    proc = run_micro(moved)
    assert proc.returncode == 0
    assert "TrainEstimator member" not in proc.stdout and "NeymanToys mu" not in proc.stdout
    assert _visible_artifacts_are_whole(moved) == 8
    for path in moved.rglob("*.json"):
        assert str(filled_store) not in path.read_text()


def test_pickles_are_refused(tmp_path):
    store = Store(tmp_path)
    address = make_address("Demo", {"pickle": True})
    with pytest.raises(StoreError, match="is a pickle; hsbi stores none"):
        with store.writer("Demo", address, {}) as out:
            import pickle

            (out / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert not store.exists("Demo", address)
    # an .npz with an object array (pickled inside the zip) is stored but never loaded
    with store.writer("Demo", address, {}) as out:
        np.savez(out / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(StoreError, match="holds pickled objects; hsbi never loads pickles"):
        store.open("Demo", address).arrays("objects.npz")


def test_fsspec_store_through_the_remote_code_path(tmp_path):
    """`local://` goes through fsspec like s3:// would: upload, manifest last, verified cache."""
    url = f"local://{tmp_path}/remote"
    proc = run_micro(url)
    assert proc.returncode == 0, proc.stdout[-3000:]
    remote = Store(url, cache=str(tmp_path / "cache"))
    assert remote.remote and len(list(remote.artifacts())) == 8
    (infer,) = remote.addresses("InferProfileLikelihood")
    assert set(remote.open("InferProfileLikelihood", infer).json("result.json")) >= {"intervals"}
    again = run_micro(url)
    assert again.returncode == 0 and "NeymanToys mu" not in again.stdout


def test_memory_store_roundtrip():
    store = Store("memory://hsbi-test/store", cache=None)
    address = make_address("Demo", {"mem": 1})
    with store.writer("Demo", address, {"mem": 1}) as out:
        (out / "a.json").write_text(json.dumps({"x": 1}))
    assert store.exists("Demo", address) and store.find(address) == "Demo"
    assert store.open("Demo", address).json("a.json") == {"x": 1}
    store.remove("Demo", address)
    assert not store.exists("Demo", address)
