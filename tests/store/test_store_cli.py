"""`hsbi store ls|show|verify|gc|reproduce` on a store filled by a real run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hsbi.store import Store

pytestmark = pytest.mark.slow


def hsbi(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HSBI_STORE": str(store)}
    return subprocess.run([str(Path(sys.executable).with_name("hsbi")), "store", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_ls_and_show(store_copy):
    out = hsbi(store_copy, "ls").stdout
    assert "8 artifacts" in out and "TrainEstimator" in out and "kB" in out
    (infer,) = Store(store_copy).addresses("InferProfileLikelihood")
    tree = hsbi(store_copy, "show", infer).stdout
    for family in ("InferProfileLikelihood", "TrainEstimator", "SimulateSamples", "NeymanToys"):
        assert family in tree
    assert "code v1-s1-" in tree and "torch" in tree


def test_manifests_record_production_times(store_copy):
    """Every artifact a real `law run` made records when its task started and how long it took;
    `run_timing` sums them over an artifact and everything upstream of it."""
    import datetime as dt

    from hsbi.store.tools import run_timing

    store = Store(store_copy)
    (infer,) = store.addresses("InferProfileLikelihood")
    for family, address in store.artifacts():
        m = store.manifest(family, address)
        assert m["seconds"] >= 0 and dt.datetime.fromisoformat(m["started"]) <= dt.datetime.fromisoformat(m["created"])
    timing = run_timing(store, [infer])
    assert timing["artifacts"] == timing["timed"] == 8
    assert sum(n for n, _ in timing["per_family"].values()) == 8 and "TrainEstimator" in timing["per_family"]
    assert timing["seconds"] > 0 and timing["span_seconds"] >= timing["seconds"] - 8  # 1 s resolution each
    assert " s on " in hsbi(store_copy, "show", infer).stdout  # `show` prints each production time


def test_verify_reports_corruption(store_copy):
    assert hsbi(store_copy, "verify", "--all").returncode == 0
    (member,) = Store(store_copy).addresses("TrainEstimator")
    weights = store_copy / "TrainEstimator" / member / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 0xFF
    weights.write_bytes(bytes(blob))
    proc = hsbi(store_copy, "verify", "--all")
    assert proc.returncode == 1
    assert f"CORRUPT  artifact TrainEstimator/{member}: file weights.safetensors" in proc.stdout
    assert "7 ok, 1 corrupt" in proc.stdout


def test_gc_keeps_reachable_and_removes_the_rest(store_copy):
    store = Store(store_copy)
    (infer,) = store.addresses("InferProfileLikelihood")
    with store.writer("Stray", "ab" * 12, {}) as out:
        (out / "x.json").write_text("{}")
    dry = hsbi(store_copy, "gc", "--keep", infer, "--keep-recent-days", "0")
    assert "would remove Stray/" + "ab" * 12 in dry.stdout and "8 kept, 1 to remove" in dry.stdout
    assert store.exists("Stray", "ab" * 12)  # dry run by default
    hsbi(store_copy, "gc", "--keep", infer, "--keep-recent-days", "0", "--delete")
    assert not store.exists("Stray", "ab" * 12)
    assert len(list(store.artifacts())) == 8
    assert hsbi(store_copy, "verify", "--all").returncode == 0


@pytest.mark.parametrize("family", ["SimulateSamples", "TrainEstimator"])
def test_reproduce_matches(store_copy, family):
    (address,) = Store(store_copy).addresses(family)
    proc = hsbi(store_copy, "reproduce", address)
    assert proc.returncode == 0, proc.stdout
    assert f"{family}/{address}: MATCH" in proc.stdout


def test_bad_address_is_one_line(store_copy):
    proc = hsbi(store_copy, "show", "../../etc/passwd")
    assert proc.returncode == 2
    assert proc.stdout.strip().startswith("hsbi: error: invalid address '../../etc/passwd'")
