"""A 1,000-branch training workflow on the loopback SLURM with law's job bundling (issue 18).

``TrainEstimator`` of the tiny analysis (``tests/data/tiny.yaml``) with ``training.members`` =
``--branches`` (one member per branch, 1 epoch) runs as SLURM jobs of ``--tasks-per-job``
branches each (``--TrainEstimator-tasks-per-job``): the jobs submitted, the wall time of the
``law run`` from submission to the last artifact, the branches' own production seconds (the
manifests' ``seconds``) and what is left per branch: the scheduler's and law's overhead (job
start-up with its imports, polling, submission), ``wall x slots / branches - production``, with
``slots`` the CPUs the loopback node offers.

The cluster is the one the batch tests use (``.ci/batch/slurm.sh``, root, Debian's slurm-wlm);
the samples are made first, locally. About 10 minutes for 1,000 branches on 2 cores.

    python benchmarks/bench_bundling.py [--branches 1000] [--tasks-per-job 50] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def _port_pair() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue


def _law(task: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["law", "run", task, *args], env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0), check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=1000)
    parser.add_argument("--tasks-per-job", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hsbi-bench-bundling-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o777)
    daemon = {**os.environ, "HSBI_SLURM_DIR": str(work / "slurm-daemon"), "HSBI_SLURM_PORT": str(_port_pair()),
              "PATH": os.environ["PATH"] + ":/usr/local/sbin:/usr/sbin:/sbin"}
    up = subprocess.run(["bash", str(ROOT / ".ci" / "batch" / "slurm.sh"), "up"], env=daemon, cwd=ROOT, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if up.returncode != 0:
        raise SystemExit(f"bench_bundling: the loopback SLURM did not start: {up.stdout[-2000:]}")
    try:
        env = {**daemon, "SLURM_CONF": str(work / "slurm-daemon" / "slurm.conf"), "HSBI_STORE": str(work / "store"),
               "HSBI_JOB_DIR": str(work / "jobs")}
        slots = int(re.search(r"CPUTot=(\d+)", subprocess.run(["scontrol", "show", "node"], env=env, text=True,
                                                              stdout=subprocess.PIPE, check=True).stdout).group(1))
        config = ("--config", str(TINY), "--set", f"training.members={args.branches},training.max_epochs=1")
        prep = _law("SimulateSamples", *config, env=env)
        if prep.returncode != 0:
            raise SystemExit(f"bench_bundling: SimulateSamples failed: {prep.stdout[-2000:]}")
        start = time.monotonic()
        run = _law("TrainEstimator", *config, "--workflow", "slurm", "--tasks-per-job", str(args.tasks_per_job),
                   "--poll-interval", "2sec", "--retries", "0", env=env)
        wall = time.monotonic() - start
        if run.returncode != 0:
            raise SystemExit(f"bench_bundling: the workflow failed: {run.stdout[-3000:]}")
        jobs = sum(int(n) for n in re.findall(r"submitted (\d+) slurm job\(s\)", run.stdout))
        seconds = [json.loads(m.read_text()).get("seconds", 0.0)
                   for m in (work / "store" / "TrainEstimator").glob("*/manifest.json")]
        per_branch = sum(seconds) / len(seconds)
        overhead = wall * slots / len(seconds) - per_branch
        print(f"{len(seconds)} TrainEstimator branches (1 epoch each) in {jobs} SLURM jobs of {args.tasks_per_job} "
              f"branches on {slots} slots: wall {wall:.1f} s (submission to the last artifact)")
        print(f"production per branch {per_branch:.2f} s (sum {sum(seconds):.0f} s); overhead per branch "
              f"(wall x slots / branches - production) {overhead:.2f} s")
    finally:
        subprocess.run(["bash", str(ROOT / ".ci" / "batch" / "slurm.sh"), "down"], env=daemon, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


if __name__ == "__main__":
    main()
