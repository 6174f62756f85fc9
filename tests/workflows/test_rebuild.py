"""Rebuilding an artifact with a real `law run` of a cheap task: --remove-output, a directory left
without a manifest, and `hsbi store reproduce` into a scratch directory that does not exist yet."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hsbi.store import MANIFEST_NAME, Store
from helpers import MICRO_CONFIG, run_law

pytestmark = pytest.mark.slow


def _observed(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_law(store, "SimulateObserved", "--config", str(MICRO_CONFIG), *args)


@pytest.fixture(scope="module")
def observed_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("observed") / "store"
    proc = _observed(store)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return store


@pytest.fixture
def store(observed_store, tmp_path) -> Path:
    shutil.copytree(observed_store, tmp_path / "store")
    return tmp_path / "store"


def test_remove_output_rebuilds(store):
    (address,) = Store(store).addresses("SimulateObserved")
    before = Store(store).manifest("SimulateObserved", address)["created"]
    proc = _observed(store, "--remove-output", "0,a,y")
    assert proc.returncode == 0 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert Store(store).open("SimulateObserved", address).manifest["digest"]
    assert "removed" in proc.stdout.lower() or Store(store).manifest("SimulateObserved", address)["created"] >= before


def test_a_directory_without_manifest_is_replaced_by_a_rebuild(store):
    (address,) = Store(store).addresses("SimulateObserved")
    (store / "SimulateObserved" / address / MANIFEST_NAME).unlink()
    proc = _observed(store)
    assert proc.returncode == 0 and "Directory not empty" not in proc.stdout, proc.stdout[-3000:]
    Store(store).open("SimulateObserved", address)


def test_reproduce_into_a_scratch_directory_that_does_not_exist(store, tmp_path):
    (address,) = Store(store).addresses("SimulateObserved")
    scratch = tmp_path / "new" / "scratch"
    proc = subprocess.run([str(Path(sys.executable).with_name("hsbi")), "store", "reproduce", address,
                           "--scratch", str(scratch)], env={**os.environ, "HSBI_STORE": str(store)},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    assert f"SimulateObserved/{address}: MATCH" in proc.stdout
