"""Shared fixtures: an isolated store per test, a tiny analysis config, a real `law run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `workflows` is importable as setup.sh's PYTHONPATH makes it
TINY_CONFIG = ROOT / "tests" / "data" / "tiny.yaml"


def _law_env(store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LAW_HOME", str(ROOT / ".law"))
    env["HSBI_BASE"] = str(ROOT)
    env["LAW_CONFIG_FILE"] = str(ROOT / "law.cfg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HSBI_STORE"] = str(store)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _law_bin() -> str:
    return str(Path(sys.executable).with_name("law"))


@pytest.fixture(scope="session", autouse=True)
def _law_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Make sure the law task index exists (setup.sh writes it; a bare pytest may not)."""
    env = _law_env(tmp_path_factory.mktemp("store"))
    subprocess.run([_law_bin(), "index", "-q"], env=env, check=True, cwd=ROOT)
    for key in ("LAW_HOME", "LAW_CONFIG_FILE", "HSBI_BASE"):
        os.environ.setdefault(key, env[key])


@pytest.fixture
def store_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("HSBI_STORE", str(root))
    return root


@pytest.fixture
def law_run(store_root: Path):
    """Run ``law run TASK ARGS`` for real; returns the CompletedProcess (text, merged output)."""

    def run(task: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_law_bin(), "run", task, *args],
            env=_law_env(store_root),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    return run
