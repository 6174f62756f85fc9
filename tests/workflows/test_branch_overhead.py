"""The shortcuts that keep a 1,000-branch workflow's DAG cheap (benchmarks/bench_branches.py) give
exactly law's own tasks: branch tasks, their requirements and the requirements' workflows are the
(luigi-cached) instances law's req_branch, req and req_workflow make, also with workflow
parameters on the command line; a config file is read once per process, and again once changed."""

from __future__ import annotations

from pathlib import Path

import law
import pytest
import yaml
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from hsbi.models.many_np import ManyNP
from workflows.ingest import IngestSamples
from workflows.statmodel import TrainRatio


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return ManyNP().write_samples(tmp_path_factory.mktemp("samples"), seed=1, n_mc_per_process=50)


@pytest.mark.parametrize("argv", [
    [],
    ["--workflow", "slurm", "--acceptance", "0.5", "--job-cpus", "3", "--poll-interval", "1sec",
     "--retries", "0", "--IngestSamples-job-memory", "3GB", "--branches", "0:5"],
    ["--workflow", "htcondor", "--TrainRatio-tolerance", "2", "--IngestSamples-retries", "7", "--pilot"],
])
def test_branch_tasks_and_requirements_are_the_ones_law_makes(config, argv):
    Register.clear_instance_cache()
    with CmdlineParser.global_instance(["TrainRatio", "--config", str(config), "--set", "training.members=2",
                                        *argv]) as parser:
        workflow = parser.get_task_obj()
        tasks = workflow.get_branch_tasks()
        assert len(tasks) == len(workflow.get_branch_map())
        for branch, task in tasks.items():
            assert task is law.BaseWorkflow.req_branch(workflow, branch)
            assert task.as_workflow() is workflow
            reqs = task.requires()
            assert {k for k, r in reqs.items() if isinstance(r, IngestSamples)} == \
                {f"{s}:0" for s in task.branch_data["samples"]}
            for req in reqs.values():
                assert req is type(req).req(task, **{"branch": req.branch} if "branch" in req.param_kwargs else {})
                if isinstance(req, law.BaseWorkflow):
                    assert req.as_workflow() is law.BaseWorkflow.req_workflow(req)
        # a branch with other parameters than its siblings' (law's req from the workflow passes on
        # --acceptance, req_branch does not) shares their workflow but gets its own requirements
        other = TrainRatio.req(workflow, branch=max(tasks))
        assert other.as_workflow() is workflow
        for req in other.requires().values():
            assert req is type(req).req(other, **{"branch": req.branch} if "branch" in req.param_kwargs else {})


def test_a_config_is_read_again_once_changed(tmp_path, config):
    path = tmp_path / "analysis.yaml"
    data = yaml.safe_load(config.read_text())
    data["samples"] = [{**s, "files": [str(config.parent / f) for f in s["files"]]} for s in data["samples"]]
    for seed in (7, 8):  # same size: only the file's times tell the versions apart
        data["training"] = {"seed": seed}
        path.write_text(yaml.safe_dump(data))
        Register.clear_instance_cache()
        assert TrainRatio(config=str(path)).analysis.training.seed == seed
    Register.clear_instance_cache()
    assert TrainRatio(config=str(path)).analysis is TrainRatio(config=str(path), branch=0).analysis


def test_planning_a_workflow_imports_nothing_heavy(config):
    """What `law index`, `--print-status` and completeness checks run: importing the task modules,
    a TrainRatio branch map and every branch's output. No torch, Lightning, Ray or scipy.stats
    (seconds of start-up on every law command; torch alone ~2 s)."""
    import subprocess
    import sys

    from helpers import ROOT, law_env

    code = ("import sys, workflows.tasks, workflows.ingest, workflows.tune, workflows.study, workflows.sets, "
            "workflows.statmodel\n"
            f"task = workflows.statmodel.TrainRatio(config={str(config)!r})\n"
            "[branch.output() for branch in task.get_branch_tasks().values()]\n"
            "print(sorted(m for m in ('torch', 'lightning', 'ray', 'scipy.stats') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=law_env(config.parent / "store"), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"
