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


#: what the fit-only path of a workspace must not import (the training stack)
TRAINING_STACK = ("torch", "lightning", "ray")


def fit_only(workspace: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """``hsbi fit WORKSPACE ARGS`` in a fresh interpreter that reports the training-stack modules
    it imported (``HEAVY [...]`` on stderr) and exits 99 if there are any."""
    import sys

    code = ("import sys; from hsbi.cli import main; rc = main(sys.argv[1:]); "
            f"heavy = [m for m in {TRAINING_STACK!r} if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc if not heavy else 99)")
    return subprocess.run([sys.executable, "-c", code, "fit", str(workspace), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def run_micro(store: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_law(store, "InferProfileLikelihood", "--config", str(MICRO_CONFIG), *args)


def assert_float64_copy_is_smooth(single, x, z: float = 0.7) -> None:
    """``single.astype(float64)`` gives the float32 ensemble's values within its rounding and is a
    smooth function of the nuisance, where float32 is a step function at its 6e-8 resolution
    (which stalls MIGRAD's numerical derivatives)."""
    import numpy as np
    import torch

    double = single.astype(torch.float64)
    np.testing.assert_allclose(double.log_components(x, np.array([z])), single.log_components(x, np.array([z])),
                               atol=1e-4)
    pair = np.array([z + 1e-9, z])
    s, d = single.log_components(x, pair), double.log_components(x, pair)
    assert np.array_equal(s[0], s[1])
    assert 0 < np.abs(d[0] - d[1]).max() < 1e-6
