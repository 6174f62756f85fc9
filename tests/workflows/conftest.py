"""Real batch systems for the workflow tests: a single-node SLURM and a single-node HTCondor,
started once per session by the project's scripts (.ci/batch/) and stopped by PID afterwards, also
when a test fails. When a daemon cannot be started the tests that need it skip with the reason,
unless HSBI_REQUIRE_BATCH=1 (set by .ci/run), which turns that into a failure.

Everything the jobs touch (stores, job directories, daemon state) lives in one world-writable
directory under /tmp: HTCondor runs jobs as an unprivileged user (uid 1000), never as root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BATCH_SCRIPTS = ROOT / ".ci" / "batch"

#: wall times measured in this session (daemon start-up, batch runs), printed at the end
BATCH_TIMINGS: dict[str, float] = {}


def _require_batch() -> bool:
    return os.environ.get("HSBI_REQUIRE_BATCH", "") == "1"


def _unavailable(reason: str) -> None:
    """Skip, or fail under HSBI_REQUIRE_BATCH=1."""
    if _require_batch():
        pytest.fail(f"HSBI_REQUIRE_BATCH=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    return 6817


def _script(
    name: str, action: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BATCH_SCRIPTS / name), action], env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
    )


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def batch_timings() -> dict[str, float]:
    """Wall times measured by the batch tests, printed in the terminal summary."""
    return BATCH_TIMINGS


@pytest.fixture(scope="session")
def batch_dir() -> Iterator[Path]:
    """A world-writable directory for stores, job files and logs of the batch tests."""
    path = Path(tempfile.mkdtemp(prefix="hsbi-batch-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _preflight(tool: str) -> None:
    if sys.platform != "linux":
        _unavailable(f"{tool}: the test cluster needs Linux")
    if os.geteuid() != 0:
        _unavailable(f"{tool}: starting the test cluster needs root (daemons, chroot, mounts)")


@pytest.fixture(scope="session")
def slurm_cluster(batch_dir: Path) -> Iterator[dict[str, str]]:
    """A running single-node SLURM; yields the environment its clients need (SLURM_CONF)."""
    _preflight("slurm")
    env = dict(os.environ)
    env["HSBI_SLURM_DIR"] = str(batch_dir / "slurm-daemon")
    env["HSBI_SLURM_PORT"] = str(_free_port_pair())
    start = time.monotonic()
    try:
        up = _script("slurm.sh", "up", env, timeout=600)
    except subprocess.TimeoutExpired:
        _script("slurm.sh", "down", env, timeout=60)
        _unavailable("slurm: .ci/batch/slurm.sh up timed out")
    BATCH_TIMINGS["slurm daemons start-up"] = time.monotonic() - start
    if up.returncode != 0:
        _script("slurm.sh", "down", env, timeout=60)
        _unavailable(f"slurm: .ci/batch/slurm.sh up failed: {_tail(up.stdout)}")
    client = {"SLURM_CONF": str(batch_dir / "slurm-daemon" / "slurm.conf")}
    try:
        yield client
    finally:
        _script("slurm.sh", "down", env, timeout=120)


@pytest.fixture(scope="session")
def htcondor_cluster(batch_dir: Path) -> Iterator[dict[str, str]]:
    """A running single-node HTCondor in a trixie chroot; yields the PATH with its client shims.

    The chroot is built once (~1 min, ~560 MB) in ${TMPDIR:-/tmp}/hsbi-condor-root and reused;
    the checkout, its Python and ``batch_dir`` are bound at the same paths inside."""
    _preflight("htcondor")
    env = dict(os.environ)
    env["HSBI_CONDOR_BINDS"] = str(batch_dir)
    tmp = Path(env.get("TMPDIR") or "/tmp")
    root = Path(env.get("HSBI_CONDOR_ROOT") or tmp / "hsbi-condor-root")
    start = time.monotonic()
    built = (root / "usr" / "sbin" / "condor_master").exists()
    try:
        up = _script("htcondor.sh", "up", env, timeout=900)
    except subprocess.TimeoutExpired:
        _script("htcondor.sh", "down", env, timeout=120)
        _unavailable("htcondor: .ci/batch/htcondor.sh up timed out")
    label = "htcondor daemons start-up" + ("" if built else " (incl. building the chroot)")
    BATCH_TIMINGS[label] = time.monotonic() - start
    if up.returncode != 0:
        _script("htcondor.sh", "down", env, timeout=120)
        _unavailable(f"htcondor: .ci/batch/htcondor.sh up failed: {_tail(up.stdout)}")
    shims = f"{root}.shims/bin"
    try:
        yield {"PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
    finally:
        _script("htcondor.sh", "down", env, timeout=180)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if BATCH_TIMINGS:
        terminalreporter.section("batch wall times")
        for name, seconds in BATCH_TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")
