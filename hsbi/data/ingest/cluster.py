"""Where dask runs: a LocalCluster by default, dask's local schedulers, an existing scheduler
address, or dask workers as SLURM batch jobs through dask-jobqueue's ``SLURMCluster``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from hsbi.exceptions import ConfigError

__all__ = ["LOCAL_SCHEDULERS", "SlurmWorkers", "dask_scheduler"]

#: dask's in-process schedulers (no distributed cluster)
LOCAL_SCHEDULERS = ("sync", "threads", "processes")


@dataclasses.dataclass(frozen=True)
class SlurmWorkers:
    """The SLURM jobs that carry the dask workers of ``dask_scheduler("slurm", ...)``.

    Each job runs ``processes_per_job`` single-threaded worker processes (one core and the
    per-worker memory limit each), so ``workers`` workers take ``ceil(workers /
    processes_per_job)`` jobs. ``walltime_s`` is the jobs' time limit (``--time``), ``partition``
    and ``account`` go to ``--partition``/``--account`` (None: the cluster's defaults).
    ``prologue`` lines run in the job script before the worker starts (e.g. ``source
    /path/to/setup.sh`` or ``module load ...``); ``python`` is the interpreter that runs the
    worker (default: this one, e.g. the project's .venv, which the nodes must see at the same
    path). ``log_directory`` receives one ``.out``/``.err`` pair per job (None: the directory
    sbatch is called from). ``timeout_s`` bounds the wait for the first worker to join.
    """

    processes_per_job: int = 1
    walltime_s: int = 3600
    partition: str | None = None
    account: str | None = None
    prologue: tuple[str, ...] = ()
    python: str = sys.executable
    log_directory: str | None = None
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for key, value in (("processes_per_job", self.processes_per_job),
                           ("walltime_s", self.walltime_s), ("timeout_s", self.timeout_s)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"dask scheduler 'slurm': {key} = {value!r}; expected a "
                                  f"positive number")

    @property
    def walltime(self) -> str:
        """``walltime_s`` as SLURM's ``HH:MM:SS`` (hours may exceed 24)."""
        seconds = int(math.ceil(self.walltime_s))
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _memory_bytes(memory_limit: str) -> int:
    """'2GiB', '1500MB', ... -> bytes; a ConfigError naming the value otherwise."""
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(memory_limit)
    except (ValueError, TypeError):
        value = 0
    if value <= 0:
        raise ConfigError(f"dask memory limit {memory_limit!r}: expected a size such as 2GiB "
                          f"or 1500MB")
    return value


def _check_workers(workers: int) -> None:
    if not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"dask workers = {workers!r}; expected a positive integer")


@contextlib.contextmanager
def dask_scheduler(
    spec: str = "local", workers: int = 2, memory_limit: str = "2GiB",
    slurm: SlurmWorkers | None = None,
) -> Iterator[Any]:
    """Yield what ``dask.compute(scheduler=...)`` takes.

    ``spec``: ``local`` (a ``distributed.LocalCluster`` of ``workers`` single-threaded worker
    processes with ``memory_limit`` each; the cluster spills and pauses rather than exceeding
    it), ``sync``/``threads``/``processes`` (dask's local schedulers), ``tcp://host:port`` (an
    existing scheduler), or ``slurm`` (``workers`` single-threaded workers with ``memory_limit``
    each, started as SLURM jobs described by ``slurm``, see :class:`SlurmWorkers`; the
    scheduler runs in this process and the jobs are cancelled on exit; settings not given there,
    such as the network interface, come from dask's ``jobqueue.slurm`` configuration).
    """
    if spec in LOCAL_SCHEDULERS:
        yield spec
        return
    from distributed import Client

    if spec == "local":
        with _local_cluster(workers, memory_limit) as client:
            yield client
        return
    if spec == "slurm":
        with _slurm_cluster(workers, memory_limit, slurm or SlurmWorkers()) as client:
            yield client
        return
    if "://" in spec:
        try:
            client = Client(spec, timeout="30s")
        except OSError as err:
            raise ConfigError(f"dask scheduler {spec}: cannot connect ({err})") from None
        with client:
            yield client
        return
    raise ConfigError(f"dask scheduler {spec!r}: expected local, sync, threads, processes, slurm "
                      f"or an address tcp://host:port")


@contextlib.contextmanager
def _local_cluster(workers: int, memory_limit: str) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    _check_workers(workers)
    _memory_bytes(memory_limit)
    # the workers' statistical profiler only feeds the dashboard (off here); with Python 3.11
    # it can log spurious tracebacks
    with dask.config.set({"distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                         processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _slurm_cluster(workers: int, memory_limit: str, slurm: SlurmWorkers) -> Iterator[Any]:
    """A ``SLURMCluster`` scaled to ``workers`` workers; yields its Client once one has joined."""
    _check_workers(workers)
    per_worker = _memory_bytes(memory_limit)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("dask scheduler 'slurm' needs dask-jobqueue (pip install "
                          "dask-jobqueue); or give a scheduler address tcp://host:port") from None
    from distributed import Client

    per_job = slurm.processes_per_job
    cluster = SLURMCluster(
        cores=per_job, processes=per_job, memory=f"{per_job * per_worker}B",
        walltime=slurm.walltime, queue=slurm.partition, account=slurm.account,
        job_script_prologue=list(slurm.prologue), python=slurm.python,
        log_directory=slurm.log_directory, job_name="hsbi-dask",
        scheduler_options={"dashboard_address": None},
    )
    with cluster, Client(cluster) as client:
        _check_job_script(cluster.job_script())
        cluster.scale(n=workers)
        _wait_for_first_worker(client, cluster, slurm)
        yield client


def _check_job_script(script: str) -> None:
    """``sbatch --test-only`` on the worker job script: a ConfigError with sbatch's reason when
    SLURM would reject it (partition, account, memory, CPUs, walltime); submits nothing."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="hsbi-dask-") as file:
        file.write(script)
        file.flush()
        try:
            check = subprocess.run(["sbatch", "--test-only", file.name], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        except FileNotFoundError:
            raise ConfigError("dask scheduler 'slurm': sbatch not found; expected a SLURM "
                              "client (sbatch, squeue, scancel) on PATH") from None
    if check.returncode != 0:
        reason = "; ".join(line.strip() for line in check.stdout.splitlines() if line.strip())
        raise ConfigError(f"dask scheduler 'slurm': sbatch rejects the worker job ({reason}); "
                          f"expected a partition, account, memory, CPUs and walltime the "
                          f"cluster grants")


def _wait_for_first_worker(client: Any, cluster: Any, slurm: SlurmWorkers) -> None:
    """Return once a worker has joined; a ConfigError with the jobs' states after the timeout."""
    try:
        client.wait_for_workers(1, timeout=slurm.timeout_s)
    except (TimeoutError, OSError):
        pass
    else:
        return
    jobs = [str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None)]
    logs = slurm.log_directory or "the directory sbatch was called from"
    raise ConfigError(
        f"dask scheduler 'slurm': no dask worker joined within {slurm.timeout_s:g} s "
        f"({_job_states(jobs)}); expected the worker jobs to start: check the partition, "
        f"resources and walltime, the job logs in {logs}, or allow a longer timeout"
    )


def _job_states(job_ids: list[str]) -> str:
    """'SLURM job 12: PENDING (Resources)' per job, or why there is none."""
    if not job_ids:
        return "no SLURM job could be submitted"
    try:
        out = subprocess.run(
            ["squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i %T %r"],
            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"SLURM job(s) {', '.join(job_ids)}; squeue failed: {err}"
    states = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0] in job_ids:
            states[parts[0]] = parts[1] + ("" if parts[2] == "None" else f" ({parts[2]})")
    return ", ".join(f"SLURM job {j}: {states.get(j, 'unknown to squeue')}" for j in job_ids)
