"""IngestSamples: the analysis config's samples as Parquet shards in the store (one branch per
sample and file group)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import law
import luigi

from hsbi.exceptions import HSBIError
from workflows.framework import HSBIWorkflow, UserError

__all__ = ["IngestSamples"]


def _ingest(sample: Any, files: list, out: Path, spec: str, workers: int, memory: str) -> dict:
    from hsbi.data.ingest import dask_scheduler, ingest_group

    with dask_scheduler(spec, workers, memory) as scheduler:
        return ingest_group(sample, files, out, scheduler=scheduler)


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
    dask_scheduler = luigi.Parameter(
        default="local", significant=False,
        description="local (a LocalCluster), sync, threads, processes, slurm (dask-jobqueue) or "
        "an existing scheduler's address tcp://host:port; default: local",
    )
    dask_workers = luigi.IntParameter(
        default=2, significant=False, description="LocalCluster worker processes; default: 2"
    )
    dask_memory = luigi.Parameter(
        default="2GiB", significant=False,
        description="memory limit per dask worker (LocalCluster, SLURM); default: 2GiB",
    )

    def _base_dir(self) -> Path:
        if str(self.config) in ("", "default"):
            return Path.cwd()
        return Path(self.config).expanduser().resolve().parent

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

    def create_branch_map(self) -> dict[int, dict[str, Any]]:
        from hsbi.data.ingest import fingerprint, group_files, resolve_files

        branches: dict[int, dict[str, Any]] = {}
        try:
            for sample in self._selected():
                files = [fingerprint(p) for p in resolve_files(sample, self._base_dir())]
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

    def branch_params(self) -> dict[str, Any]:
        """The branch data without ``paths``: the address follows content, not location."""
        return {k: v for k, v in self.branch_data.items() if k != "paths"}

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
                                     self.dask_workers, self.dask_memory)
        summary = {k: manifest[k] for k in ("sample", "entries", "selected", "rows")}
        self.publish_message(f"ingested {json.dumps(summary)}")
