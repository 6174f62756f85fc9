"""IngestSamples: the analysis config's samples as Parquet shards in the store (one branch per
sample and file group)."""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import law
import luigi

from hsbi.exceptions import HSBIError
from workflows.framework import HSBIWorkflow, UserError
from workflows.remote import _seconds as seconds
from workflows.remote import job_config, jobs_root

__all__ = ["IngestSamples"]


def _ingest(sample: Any, files: list, out: Path, spec: str, workers: int, memory: str,
            slurm: dict | None = None, allow_empty: bool = True) -> dict:
    from hsbi.data.ingest import dask_scheduler, ingest_group
    from hsbi.data.ingest.cluster import SlurmWorkers

    workers_jobs = SlurmWorkers(**slurm) if slurm else None
    with dask_scheduler(spec, workers, memory, workers_jobs) as scheduler:
        return ingest_group(sample, files, out, scheduler=scheduler, allow_empty=allow_empty)


def _run_option(cls: type, default: Any, description: str) -> Any:
    """A parameter that chooses where the work runs and never changes the address."""
    return cls(default=default, significant=False, description=description)


class IngestSamples(HSBIWorkflow):
    """One branch per file group of each sample in ``samples`` of the config.

    A branch's address hashes the sample definition (without the file locations) and the sha256
    of every input file, so it changes when a file's content or the definition changes, and not
    when the files move. Relative file globs are resolved against the config file's folder.
    The dask parameters choose where the work runs and never change the address.
    """

    code_modules = ("hsbi.data.ingest", "hsbi.config.samples")

    samples = law.CSVParameter(
        default=(), description="names of the samples to ingest, comma-separated; default: all"
    )
    dask_scheduler = _run_option(
        luigi.Parameter, "local", "local (a LocalCluster), sync, threads, processes, slurm "
        "(dask-jobqueue) or an existing scheduler's address tcp://host:port; default: local")
    dask_workers = _run_option(
        luigi.IntParameter, 2,
        "dask worker processes (LocalCluster or SLURM), one core each; default: 2")
    dask_memory = _run_option(
        luigi.Parameter, "2GiB",
        "memory limit per dask worker (LocalCluster, SLURM); default: 2GiB")
    dask_slurm_processes = _run_option(
        luigi.IntParameter, 1, "slurm: dask workers per SLURM job (its cores; its memory: that "
        "many times --dask-memory); default: 1")
    dask_slurm_walltime = _run_option(
        luigi.Parameter, "", "slurm: wall-time limit of the worker jobs, e.g. 2h or 01:30:00; "
        "default: [hsbi_jobs] walltime")
    dask_slurm_partition = _run_option(
        luigi.Parameter, "", "slurm: partition of the worker jobs; default: [hsbi_jobs] "
        "slurm_partition")
    dask_slurm_account = _run_option(
        luigi.Parameter, "", "slurm: account of the worker jobs; default: [hsbi_jobs] "
        "slurm_account")
    dask_slurm_prologue = _run_option(
        luigi.Parameter, "", "slurm: shell line run in each worker job before the worker "
        "starts, e.g. 'source /path/to/setup.sh'; the worker runs this process's Python; "
        "default: none")
    dask_timeout = _run_option(
        luigi.FloatParameter, 300.0,
        "slurm: seconds to wait for the first dask worker to join; default: 300")

    def _slurm_workers(self) -> dict[str, Any] | None:
        """``SlurmWorkers`` arguments for ``--dask-scheduler slurm`` (None otherwise); the job
        logs go to the job directory."""
        if self.dask_scheduler != "slurm":
            return None
        return {
            "processes_per_job": self.dask_slurm_processes,
            "walltime_s": seconds(self.dask_slurm_walltime or job_config("walltime", "1h")),
            "partition": self.dask_slurm_partition or job_config("slurm_partition"),
            "account": self.dask_slurm_account or job_config("slurm_account"),
            "prologue": (self.dask_slurm_prologue,) if self.dask_slurm_prologue else (),
            "log_directory": str(jobs_root() / self.task_family / "dask-slurm"),
            "timeout_s": self.dask_timeout,
        }

    def _selected(self) -> list[Any]:
        known = {s.name: s for s in self.analysis.samples}
        names = list(self.samples) or list(known)
        if not names:
            raise UserError(f"{self.task_family}: the config {self.config} has no samples; "
                            f"expected a 'samples' list")
        for name in names:
            if name not in known:
                raise UserError(f"{self.task_family}: no sample {name!r} in the config; expected "
                                f"one of {', '.join(known)}")
        return [known[n] for n in names]

    def rerun_args(self) -> list[str]:
        return ["--samples", ",".join(self.samples)] if self.samples else []

    def create_branch_map(self) -> dict[int, dict[str, Any]]:
        from hsbi.data.ingest import fingerprint, group_files, resolve_files

        branches: dict[int, dict[str, Any]] = {}
        try:
            for sample in self._selected():
                files = [fingerprint(p) for p in resolve_files(sample, self.config_dir())]
                definition = dataclasses.asdict(sample)
                definition.pop("files")
                for group, members in enumerate(group_files(sample, files)):
                    branches[len(branches)] = {
                        "sample": sample.name,
                        "group": group,
                        "definition": definition,
                        "files": [f.identity() for f in members],
                        "paths": [f.path for f in members],
                    }
        except HSBIError as err:
            raise UserError(f"{self.task_family}: {err}") from None
        return branches

    @cached_property
    def sample_branches(self) -> dict[str, list[int]]:
        """The branch numbers of each sample (its file groups)."""
        out: dict[str, list[int]] = {}
        for branch, data in self.get_branch_map().items():
            out.setdefault(data["sample"], []).append(branch)
        return out

    def branch_params(self) -> dict[str, Any]:
        """The branch data without ``paths``: the address follows content, not location."""
        return {k: v for k, v in self.branch_data.items() if k != "paths"}

    def _others_empty(self) -> bool:
        """Whether every other branch of the ingestion is stored and has no events (then this
        one may not be empty too)."""
        from hsbi.data.ingest import MANIFEST

        for branch in self.branch_map:
            other = self.req(self, branch=branch)
            if branch != self.branch and (not other.output().exists() or other.artifact().json(MANIFEST)["rows"]):
                return False
        return True

    def run(self) -> None:
        from hsbi.data.ingest import fingerprint

        data = self.branch_data
        sample = next(s for s in self.analysis.samples if s.name == data["sample"])
        files = [fingerprint(p) for p in data["paths"]]
        for file, expected in zip(files, data["files"]):
            if file.sha256 != expected["sha256"]:
                raise UserError(f"{self.task_family}: file {file.path} changed since this run "
                                f"was planned; run again")
        self.publish_message(f"ingesting sample {sample.name} group {data['group']}: "
                             f"{len(files)} file(s)")
        with self.write() as out:
            manifest = self.run_hsbi(_ingest, sample, files, out, self.dask_scheduler,
                                     self.dask_workers, self.dask_memory, self._slurm_workers(),
                                     not self._others_empty())
        summary = {k: manifest[k] for k in ("sample", "entries", "selected", "rows")}
        self.publish_message(f"ingested {json.dumps(summary)}")
