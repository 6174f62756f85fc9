"""The default DAG with its workflow tasks (TrainEstimator, NeymanToys) dispatched as real SLURM
and HTCondor jobs: same artifact addresses as a local run; failure, retry, report, resume, cancel.

The daemons come from tests/workflows/conftest.py (started by .ci/batch/*.sh, skipped with the
reason when they cannot start, unless HSBI_REQUIRE_BATCH=1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, TINY_CONFIG, law_cmd, law_env

pytestmark = pytest.mark.slow

TINY = str(TINY_CONFIG)
WORKFLOW_TASKS = ("TrainEstimator", "NeymanToys")
FAILED_RE = re.compile(
    r"hsbi: error: TrainEstimator branch (\d+) \(member=\d+, seed=\d+, fold=\d+, folds=\d+\) failed as (\w+) job \S+ "
    r"after (\d+) attempt\(s\); log: (\S+)"
)


def law(task: str, *args: str, store: Path, batch_dir: Path, cluster: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A real ``law run`` on ``store`` with job files under ``batch_dir/jobs``. It runs with umask
    0 so that what the (root) submitter creates in the store stays writable for the HTCondor job
    user (uid 1000); a normal user submitting as himself does not need that."""
    env = {**law_env(store), "HSBI_JOB_DIR": str(batch_dir / "jobs"), **(cluster or {})}
    return subprocess.run(
        law_cmd(task, *args),
        env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=timeout, preexec_fn=lambda: os.umask(0),
    )


def addresses(store: Path) -> set[tuple[str, str]]:
    """(family, address) of every finished artifact in the store."""
    return {
        (fam.name, art.name)
        for fam in store.iterdir() if fam.is_dir() and not fam.name.startswith(".")
        for art in fam.iterdir() if (art / "manifest.json").exists()
    }


def remote_args(kind: str, retries: int = 0) -> list[str]:
    """--workflow KIND (and fast polling) for every workflow task of the DAG."""
    args = []
    for task in WORKFLOW_TASKS:
        args += [f"--{task}-workflow", kind, f"--{task}-poll-interval", "1sec",
                 f"--{task}-retries", str(retries)]
    return args


def _first_failed_log(output: str) -> str:
    """The tail of the first failed job's log named in law's output (for assertion messages)."""
    for match in re.finditer(r"status: failed.*?log: (\S+)", output):
        path = Path(match.group(1).rstrip(","))
        if path.exists():
            return f"\n--- {path} ---\n" + path.read_text()[-3000:]
    return ""


def job_logs(batch_dir: Path, family: str, kind: str) -> list[Path]:
    return sorted((batch_dir / "jobs" / family).glob(f"*/{kind}/stdall_*.txt"))


def job_ids(batch_dir: Path, family: str, kind: str) -> list[str]:
    ids = []
    for path in (batch_dir / "jobs" / family).glob(f"*/{kind}/{kind}_jobs_*.json"):
        ids += [str(j["job_id"]) for j in json.loads(path.read_text())["jobs"].values()]
    return ids


@pytest.fixture(scope="session")
def local_addresses(batch_dir: Path, batch_timings: dict[str, float]) -> set[tuple[str, str]]:
    """The addresses of the tiny DAG run locally (the reference for the batch runs)."""
    store = batch_dir / "store-local"
    start = time.monotonic()
    run = law("InferProfileLikelihood", "--config", TINY, store=store, batch_dir=batch_dir)
    batch_timings["local DAG run (reference)"] = time.monotonic() - start
    assert run.returncode == 0, run.stdout[-3000:]
    found = addresses(store)
    assert {f for f, _ in found} >= {"SimulateSamples", "TrainEstimator", "NeymanToys",
                                    "InferProfileLikelihood"}
    return found


def _dag_as_jobs(kind: str, cluster: dict[str, str], batch_dir: Path, local: set,
                 timings: dict[str, float]) -> Path:
    store = batch_dir / f"store-{kind}"
    start = time.monotonic()
    run = law("InferProfileLikelihood", "--config", TINY, *remote_args(kind),
              store=store, batch_dir=batch_dir, cluster=cluster)
    timings[f"{kind} DAG run (2 training + 3 toy jobs)"] = time.monotonic() - start
    assert run.returncode == 0, run.stdout[-3000:] + _first_failed_log(run.stdout)
    # the branches ran as jobs, not in the law process
    assert f"submitted 2 {kind} job(s)" in run.stdout
    assert f"submitted 3 {kind} job(s)" in run.stdout
    assert "TrainEstimator member 0" not in run.stdout
    for family, n in (("TrainEstimator", 2), ("NeymanToys", 3)):
        logs = job_logs(batch_dir, family, kind)
        assert len(logs) == n, logs
        for log in logs:
            assert "job exit code : 0" in log.read_text(), log
    # the same artifacts, at the same addresses, as the local run
    assert addresses(store) == local
    return store


# -- SLURM -------------------------------------------------------------------------------------


def test_slurm_dag_same_addresses(slurm_cluster, batch_dir, local_addresses, batch_timings):
    _dag_as_jobs("slurm", slurm_cluster, batch_dir, local_addresses, batch_timings)
    states = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %T"], env={**os.environ, **slurm_cluster},
        text=True, stdout=subprocess.PIPE, check=True,
    ).stdout
    assert states.count("COMPLETED") >= 5, states


def test_slurm_bundled_branches_same_addresses(slurm_cluster, batch_dir, local_addresses, batch_timings):
    """law's job bundling (``--tasks-per-job``): the 2 training and 3 toy branches as one job
    each (a workflow of 1,000 branches becomes a few dozen jobs), the same artifacts."""
    store = batch_dir / "store-slurm-bundled"
    args = [*remote_args("slurm"), *(a for task in WORKFLOW_TASKS for a in (f"--{task}-tasks-per-job", "3"))]
    start = time.monotonic()
    run = law("InferProfileLikelihood", "--config", TINY, *args, store=store, batch_dir=batch_dir / "bundled",
              cluster=slurm_cluster)
    batch_timings["slurm DAG run, branches bundled (1 training + 1 toy job)"] = time.monotonic() - start
    assert run.returncode == 0, run.stdout[-3000:] + _first_failed_log(run.stdout)
    assert run.stdout.count("submitted 1 slurm job(s)") == 2, run.stdout[-3000:]
    assert addresses(store) == local_addresses


def test_slurm_failure_retry_report_resume_cancel(slurm_cluster, batch_dir, batch_timings):
    store = batch_dir / "store-slurm-fail"
    kw = {"store": store, "batch_dir": batch_dir, "cluster": slurm_cluster}
    base = ("--config", TINY, "--workflow", "slurm", "--poll-interval", "1sec")
    start = time.monotonic()

    # branch 1 fails in every attempt: retried once, then reported with its log; law run fails
    failed = law("TrainEstimator", *base, "--retries", "1", "--fail-branches", "1", **kw)
    assert failed.returncode != 0
    reports = FAILED_RE.findall(failed.stdout)
    assert [(b, k, a) for b, k, a, _ in reports] == [("1", "slurm", "2")], failed.stdout[-3000:]
    log = Path(reports[0][3])
    assert "failed on purpose (--fail-branches)" in log.read_text()
    # law stops polling at the first job beyond its retries; branch 0's job runs on and finishes
    for _ in range(240):
        done = [p for p in (store / "TrainEstimator").glob("*/manifest.json")]
        if done:
            break
        time.sleep(0.5)
    (member0,) = (p.parent for p in done)
    finished_at = (member0 / "manifest.json").stat().st_mtime

    # --print-status shows the submission record and the half-finished collection
    status = law("TrainEstimator", *base, "--print-status", "0", **kw)
    assert status.returncode == 0, status.stdout[-2000:]
    assert "slurm_jobs_0To2.json" in status.stdout and "absent (1/2)" in status.stdout

    # a new submission after the failure: only branch 1 is submitted, branch 0 is not redone
    fixed = law("TrainEstimator", *base, "--retries", "0", "--ignore-submission", **kw)
    assert fixed.returncode == 0, fixed.stdout[-3000:]
    assert "submitted 1 slurm job(s)" in fixed.stdout
    assert len(list((store / "TrainEstimator").iterdir())) == 2
    assert (member0 / "manifest.json").stat().st_mtime == finished_at

    # an interrupted submission (jobs submitted, law gone) is resumed: polled, not resubmitted
    other = ("--set", "training.max_epochs=1")
    submitted = law("TrainEstimator", *base, *other, "--no-poll", **kw)
    assert submitted.returncode == 0 and "submitted 2 slurm job(s)" in submitted.stdout
    resumed = law("TrainEstimator", *base, *other, "--retries", "0", **kw)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "submitted" not in resumed.stdout and "finished: 2" in resumed.stdout
    assert len(list((store / "TrainEstimator").iterdir())) == 4

    # --cancel-jobs cancels a running submission
    slow = ("--set", "training.max_epochs=50")
    before = set(job_ids(batch_dir, "TrainEstimator", "slurm"))
    assert law("TrainEstimator", *base, *slow, "--no-poll", **kw).returncode == 0
    new = set(job_ids(batch_dir, "TrainEstimator", "slurm")) - before
    assert len(new) == 2
    cancel = law("TrainEstimator", *base, *slow, "--cancel-jobs", **kw)
    assert cancel.returncode == 0, cancel.stdout[-2000:]
    env = {**os.environ, **slurm_cluster}
    for _ in range(40):
        out = subprocess.run(
            ["squeue", "--states=all", "-h", "-o", "%i %T", "-j", ",".join(sorted(new))],
            env=env, text=True, stdout=subprocess.PIPE,
        ).stdout
        if out.count("CANCELLED") == 2:
            break
        time.sleep(0.5)
    assert out.count("CANCELLED") == 2, out
    batch_timings["slurm failure/retry/resume/cancel test"] = time.monotonic() - start


# -- HTCondor ----------------------------------------------------------------------------------


def test_htcondor_dag_same_addresses(htcondor_cluster, batch_dir, local_addresses, batch_timings):
    _dag_as_jobs("htcondor", htcondor_cluster, batch_dir, local_addresses, batch_timings)
    # HTCondor ran the jobs as the unprivileged job user, not as root
    for log in job_logs(batch_dir, "TrainEstimator", "htcondor"):
        assert re.search(r"hsbi bootstrap: .* uid [1-9]\d* ", log.read_text()), log


def test_htcondor_failure_retry_report_cancel(htcondor_cluster, batch_dir, batch_timings):
    store = batch_dir / "store-htcondor-fail"
    start = time.monotonic()
    failed = law("TrainEstimator", "--config", TINY, "--workflow", "htcondor", "--poll-interval",
                 "1sec", "--retries", "1", "--fail-branches", "0,1",
                 store=store, batch_dir=batch_dir, cluster=htcondor_cluster)
    assert failed.returncode != 0
    # law stops at the first job beyond its retries (the other may still be retrying)
    reports = FAILED_RE.findall(failed.stdout)
    assert reports, failed.stdout[-3000:]
    assert {(k, a) for _, k, a, _ in reports} == {("htcondor", "2")}, failed.stdout[-3000:]
    assert {b for b, *_ in reports} <= {"0", "1"}
    for *_, log in reports:
        assert "failed on purpose (--fail-branches)" in Path(log).read_text()
    assert not (store / "TrainEstimator").exists() or not any((store / "TrainEstimator").iterdir())

    # --cancel-jobs removes the jobs of a running submission (JobStatus 3: removed)
    kw = {"store": store, "batch_dir": batch_dir, "cluster": htcondor_cluster}
    slow = ("--config", TINY, "--workflow", "htcondor", "--set", "training.max_epochs=50")
    before = set(job_ids(batch_dir, "TrainEstimator", "htcondor"))
    assert law("TrainEstimator", *slow, "--no-poll", **kw).returncode == 0
    new = set(job_ids(batch_dir, "TrainEstimator", "htcondor")) - before
    assert len(new) == 2
    cancel = law("TrainEstimator", *slow, "--cancel-jobs", **kw)
    assert cancel.returncode == 0, cancel.stdout[-2000:]
    assert "going to cancel 2 jobs" in cancel.stdout
    env = {**os.environ, **htcondor_cluster}
    for _ in range(40):
        removed = set()
        for tool in ("condor_q", "condor_history"):
            out = subprocess.run([tool, "-af", "ClusterId", "ProcId", "JobStatus"], env=env,
                                 text=True, stdout=subprocess.PIPE).stdout
            rows = (line.split() for line in out.splitlines())
            removed |= {f"{c}.{p}" for c, p, st in rows if st == "3"}
        if new <= removed:
            break
        time.sleep(0.5)
    assert new <= removed, (new, removed)
    batch_timings["htcondor failure/retry/cancel test"] = time.monotonic() - start
