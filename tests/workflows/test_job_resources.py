"""GPU requests of batch jobs: ``[hsbi_jobs] gpus`` / ``--<Task>-job-gpus`` become SLURM's
``--gres=gpu:N`` and HTCondor's ``request_gpus`` in the job configs law renders (the loopback
clusters of test_batch.py have no GPUs to run such jobs on)."""

from __future__ import annotations

from pathlib import Path

from law.contrib.htcondor.job import HTCondorJobFileFactory
from law.contrib.slurm.job import SlurmJobFileFactory

from workflows.tasks import TrainEstimator


def _configs(tmp_path: Path, **params) -> tuple[list, list]:
    task = TrainEstimator(**params)
    configs = []
    for factory, make in ((SlurmJobFileFactory, task.slurm_job_config), (HTCondorJobFileFactory,
                                                                         task.htcondor_job_config)):
        config = factory(dir=str(tmp_path), mkdtemp=False).get_config()
        config.custom_content = []  # as law's job manager hands it over
        configs.append(list(make(config, 0, [0]).custom_content))
    return configs[0], configs[1]


def test_gpus_are_requested_when_asked(tmp_path: Path) -> None:
    slurm, condor = _configs(tmp_path, job_gpus=2)
    assert ("gres", "gpu:2") in slurm and ("request_gpus", 2) in condor


def test_no_gpus_by_default(tmp_path: Path) -> None:
    slurm, condor = _configs(tmp_path)
    assert not any(key == "gres" for key, _ in slurm) and not any(key == "request_gpus" for key, _ in condor)
    assert ("cpus-per-task", 1) in slurm  # the [hsbi_jobs] defaults still apply
