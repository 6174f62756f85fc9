"""Helpers shared by the tests: paths, the environment of a real `law run`, running it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "data" / "tiny.yaml"
MICRO_CONFIG = ROOT / "tests" / "data" / "micro.yaml"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `workflows` is importable as setup.sh's PYTHONPATH makes it


def law_env(store: Path | str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LAW_HOME", str(ROOT / ".law"))
    env["HSBI_BASE"] = str(ROOT)
    env["LAW_CONFIG_FILE"] = str(ROOT / "law.cfg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HSBI_STORE"] = str(store)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def law_bin() -> str:
    return str(Path(sys.executable).with_name("law"))


def law_cmd(*args: str) -> list[str]:
    return [law_bin(), "run", *args]


def run_law(store: Path | str, task: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A real ``law run TASK ARGS`` against ``store``; merged output as text."""
    return subprocess.run(
        law_cmd(task, *args), env=law_env(store), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )


def run_micro(store: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_law(store, "InferProfileLikelihood", "--config", str(MICRO_CONFIG), *args)
