"""Distributed engines inside the real one-node SLURM of tests/workflows/conftest.py: dask workers
as SLURM jobs (dask-jobqueue) for IngestSamples, and Lightning DDP with one rank per srun task.

The daemons come from the session fixture ``slurm_cluster`` (skipped with the reason when they
cannot start, unless HSBI_REQUIRE_BATCH=1).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, law_env
from hsbi.data.ingest.cluster import SlurmWorkers, dask_scheduler
from hsbi.exceptions import ConfigError
from test_batch import addresses, law

pytestmark = pytest.mark.slow

INGEST = str(ROOT / "tests" / "data" / "configs" / "ingest.yaml")
SAMPLES = ("--samples", "hzz,higgsml")
#: small enough for 2 shared cores: about 10 s of training per run
DDP_SET = ("simulation.n_train=10000", "simulation.n_val=10000", "training.max_epochs=3")


def artifact_digests(store: Path) -> dict[str, str]:
    """sha256 of every shard and ingest.json per artifact (the store's manifest.json, which
    records when and where the artifact was made, is left out)."""
    return {p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((store / "IngestSamples").rglob("*"))
            if p.suffix == ".parquet" or p.name == "ingest.json"}


def slurm_jobs(cluster: dict[str, str], name: str) -> list[tuple[str, str]]:
    """(job id, state) of every job named ``name`` the controller still knows."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-n", name, "-o", "%i %T"],
                         env={**os.environ, **cluster}, text=True, stdout=subprocess.PIPE,
                         check=True).stdout
    return [tuple(line.split()) for line in out.splitlines()]


def one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if "hsbi: error:" in ln]
    assert len(lines) == 1 and "Traceback" not in output, output[-3000:]
    return lines[0]


# -- dask-jobqueue -------------------------------------------------------------------------------


def test_ingest_on_slurm_dask_workers_gives_the_local_shards(slurm_cluster, batch_dir,
                                                               batch_timings):
    local = batch_dir / "store-ingest-local"
    run = law("IngestSamples", "--config", INGEST, *SAMPLES, "--dask-scheduler", "sync",
              store=local, batch_dir=batch_dir)
    assert run.returncode == 0, run.stdout[-3000:]

    store = batch_dir / "store-ingest-slurm"
    start = time.monotonic()
    run = law("IngestSamples", "--config", INGEST, *SAMPLES, "--dask-scheduler", "slurm",
              "--dask-workers", "2", "--dask-memory", "1GiB", "--dask-timeout", "120",
              store=store, batch_dir=batch_dir, cluster=slurm_cluster)
    batch_timings["IngestSamples on dask-jobqueue SLURM workers (2 branches)"] = \
        time.monotonic() - start
    assert run.returncode == 0, run.stdout[-3000:]
    # same addresses, byte-identical shards and manifests
    assert addresses(store) == addresses(local) and len(addresses(local)) == 2
    digests = artifact_digests(store)
    assert digests == artifact_digests(local)
    assert sum(name.endswith(".parquet") for name in digests) >= 6
    # the work ran in SLURM jobs: 2 worker jobs per branch, cancelled when the branch was done,
    # each worker registered with the branch's scheduler (logs in the job directory)
    jobs = slurm_jobs(slurm_cluster, "hsbi-dask")
    assert len(jobs) == 4, jobs
    logs = sorted((batch_dir / "jobs" / "IngestSamples" / "dask-slurm").glob("hsbi-dask-*.err"))
    assert {p.stem.rsplit("-", 1)[1] for p in logs} == {j for j, _ in jobs}
    assert sum("Registered to:" in p.read_text() for p in logs) >= 2


def test_ingest_on_slurm_reports_rejected_and_silent_worker_jobs(slurm_cluster, batch_dir):
    store = batch_dir / "store-ingest-slurm-errors"
    kw = {"store": store, "batch_dir": batch_dir, "cluster": slurm_cluster}
    base = ("IngestSamples", "--config", INGEST, "--samples", "hzz", "--dask-scheduler", "slurm",
            "--dask-workers", "1")
    before = {j for j, _ in slurm_jobs(slurm_cluster, "hsbi-dask")}

    # sbatch would refuse the worker job: its reason, before any job is submitted
    rejected = law(*base, "--dask-slurm-partition", "nosuch", **kw)
    assert rejected.returncode != 0
    line = one_error_line(rejected.stdout)
    assert "dask scheduler 'slurm': sbatch rejects the worker job" in line
    assert "invalid partition specified: nosuch" in line, line
    assert {j for j, _ in slurm_jobs(slurm_cluster, "hsbi-dask")} == before

    # a worker job that starts but never brings up a worker: the timeout names the job's state,
    # and the job is cancelled
    silent = law(*base, "--dask-slurm-prologue", "sleep 120", "--dask-timeout", "3", **kw)
    assert silent.returncode != 0
    line = one_error_line(silent.stdout)
    assert "dask scheduler 'slurm': no dask worker joined within 3 s (SLURM job" in line, line
    new = [(j, s) for j, s in slurm_jobs(slurm_cluster, "hsbi-dask") if j not in before]
    assert len(new) == 1 and new[0][1] in ("CANCELLED", "COMPLETING"), new
    assert new[0][0] in line
    assert not (store / "IngestSamples").exists() or not any((store / "IngestSamples").iterdir())


def test_slurm_worker_settings_are_checked_before_any_job(monkeypatch):
    assert SlurmWorkers(walltime_s=90061).walltime == "25:01:01"
    with pytest.raises(ConfigError, match=r"'slurm': timeout_s = 0; expected a positive number"):
        SlurmWorkers(timeout_s=0)
    with pytest.raises(ConfigError, match=r"dask memory limit 'lots': expected a size such as"):
        with dask_scheduler("slurm", 1, "lots"):
            pass
    with pytest.raises(ConfigError, match=r"dask workers = 0; expected a positive integer"):
        with dask_scheduler("slurm", 0):
            pass
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no SLURM client
    with pytest.raises(ConfigError, match=r"'slurm': sbatch not found; expected a SLURM client"):
        with dask_scheduler("slurm", 1, "1GiB"):
            pass


# -- Lightning DDP ---------------------------------------------------------------------------------


def wait_for_job(cluster: dict[str, str], job_id: str, timeout: float = 600) -> str:
    """Poll squeue every second (``sbatch --wait`` polls ever more slowly) until the job has
    ended; returns its final state."""
    env = {**os.environ, **cluster}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T"],
                               env=env, text=True, stdout=subprocess.PIPE).stdout.strip()
        if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state
        time.sleep(1)
    raise AssertionError(f"SLURM job {job_id} still {state} after {timeout:g} s")


def ddp_job(cluster: dict[str, str], out: Path, tasks: int) -> tuple[dict, str]:
    """``sbatch --nodes=1 --ntasks-per-node=TASKS`` of ``srun python benchmarks/slurm_ddp.py
    OUT``; returns rank 0's result.json and the job's output once the job has completed."""
    log = out.with_suffix(".out")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "slurm_ddp.py"), str(out), "--set",
           *DDP_SET]
    job = subprocess.run(
        ["sbatch", "--parsable", "--job-name", "hsbi-ddp", "--nodes=1",
         f"--ntasks-per-node={tasks}", "--cpus-per-task=1", "--time=10", f"--output={log}",
         "--wrap", "srun " + " ".join(cmd)],
        env={**law_env(out.parent), **cluster}, cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=60,
    )
    assert job.returncode == 0, job.stdout
    state = wait_for_job(cluster, job.stdout.strip().split(";")[0])
    output = log.read_text() if log.exists() else ""
    assert state == "COMPLETED", f"{state}\n{output[-4000:]}"
    return json.loads((out / "result.json").read_text()), output


def test_lightning_ddp_with_one_rank_per_srun_task(slurm_cluster, batch_dir, batch_timings):
    start = time.monotonic()
    one, _ = ddp_job(slurm_cluster, batch_dir / "ddp-1", tasks=1)
    batch_timings["LRE member, 1 SLURM task (submission to end)"] = time.monotonic() - start
    start = time.monotonic()
    two, output = ddp_job(slurm_cluster, batch_dir / "ddp-2", tasks=2)
    batch_timings["LRE member, 2 SLURM tasks = 2 DDP ranks (submission to end)"] = \
        time.monotonic() - start
    batch_timings["  of which the fit, 1 process"] = one["fit_seconds"]
    batch_timings["  of which the fit, 2 DDP processes"] = two["fit_seconds"]
    # each srun task was one rank of one gloo process group of 2 (Lightning's SLURMEnvironment)
    for rank in (0, 1):
        assert f"slurm_ddp: rank {rank} of 2 (1 node(s), DDP world 2)" in output, output[-3000:]
    assert (one["ddp_world_size"], two["ddp_world_size"]) == (1, 2)
    assert {p.name for p in (batch_dir / "ddp-2").iterdir()} == {
        "estimator.json", "weights.safetensors", "result.json"}
    for proc, bce in two["val_bce"].items():
        assert len(two["history"][proc]) == 3
        # DDP splits each global batch over the ranks, so the fit is the one-process fit: the
        # validation losses agree within 2 standard errors of the validation-set estimate ...
        error = one["val_bce_error"][proc]
        assert abs(bce - one["val_bce"][proc]) < 2 * error, (proc, bce, one["val_bce"][proc])
        # ... and the classifier learned: far below the loss of a constant guess (log 2)
        assert bce < math.log(2) - 10 * error, (proc, bce)
