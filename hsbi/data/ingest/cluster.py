"""Where dask runs: a LocalCluster by default, dask's local schedulers, an existing scheduler
address, or SLURM through dask-jobqueue where it is installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hsbi.exceptions import ConfigError

__all__ = ["LOCAL_SCHEDULERS", "dask_scheduler"]

#: dask's in-process schedulers (no distributed cluster)
LOCAL_SCHEDULERS = ("sync", "threads", "processes")


@contextlib.contextmanager
def dask_scheduler(
    spec: str = "local", workers: int = 2, memory_limit: str = "2GiB", slurm_jobs: int = 1
) -> Iterator[Any]:
    """Yield what ``dask.compute(scheduler=...)`` takes.

    ``spec``: ``local`` (a ``distributed.LocalCluster`` of ``workers`` single-threaded worker
    processes with ``memory_limit`` each; the cluster spills and pauses rather than exceeding
    it), ``sync``/``threads``/``processes`` (dask's local schedulers), ``tcp://host:port`` (an
    existing scheduler), or ``slurm`` (``dask_jobqueue.SLURMCluster`` with ``slurm_jobs`` jobs).
    """
    if spec in LOCAL_SCHEDULERS:
        yield spec
        return
    from distributed import Client, LocalCluster

    if spec == "local":
        import dask

        # the workers' statistical profiler only feeds the dashboard (off here); with
        # Python 3.11 it can log spurious tracebacks
        with dask.config.set({"distributed.worker.profile.enabled": False}), \
                LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                             processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    if spec == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ConfigError("dask scheduler 'slurm' needs dask-jobqueue; install it or give "
                              "a scheduler address tcp://host:port") from None
        with SLURMCluster(cores=1, processes=1, memory=memory_limit) as cluster:
            cluster.scale(jobs=slurm_jobs)
            with Client(cluster) as client:
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
