"""Shared fixtures: an isolated store per test, a real `law run`, a store filled by one run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, law_bin, law_env, run_law, run_micro


@pytest.fixture(scope="session", autouse=True)
def _law_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Make sure the law task index exists (setup.sh writes it; a bare pytest may not)."""
    env = law_env(tmp_path_factory.mktemp("store"))
    subprocess.run([law_bin(), "index", "-q"], env=env, check=True, cwd=ROOT)
    for key in ("LAW_HOME", "LAW_CONFIG_FILE", "HSBI_BASE"):
        os.environ.setdefault(key, env[key])


@pytest.fixture
def store_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("HSBI_STORE", str(root))
    return root


@pytest.fixture
def law_run(store_root: Path):
    """Run ``law run TASK ARGS`` for real against ``store_root``."""

    def run(task: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_law(store_root, task, *args, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def filled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the 8 artifacts of one complete run of the micro DAG (read-only: copy it)."""
    store = tmp_path_factory.mktemp("filled") / "store"
    proc = run_micro(store)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return store


@pytest.fixture
def store_copy(filled_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(filled_store, copy)
    return copy
