"""The shortcuts that keep a 1,000-branch workflow's DAG cheap (benchmarks/bench_branches.py) do
not change what tasks see: a config file is read once per process, and again once changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from luigi.task_register import Register

from hsbi.models.many_np import ManyNP
from workflows.statmodel import TrainRatio


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return ManyNP().write_samples(tmp_path_factory.mktemp("samples"), seed=1, n_mc_per_process=50)


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
