"""`law run InferProfileLikelihood --config` on a declared model: the user's own analysis runs
(never the embedded default), and a samples section without a model is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hsbi.models.many_np import ManyNP
from tests.helpers import run_law

FAST = "training.max_epochs=1,training.members=1,inference.scan_points=11"


@pytest.mark.slow
def test_declared_model_runs_end_to_end(tmp_path: Path) -> None:
    config = ManyNP().write_samples(tmp_path / "samples", seed=2, n_mc_per_process=800,
                                    data_params={"mu": 1.0, "shape_0": 0.5})
    proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config), "--set", FAST,
                   "--workers", "2", timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result_dir,) = (tmp_path / "store" / "InferProfileLikelihood").iterdir()
    result = json.loads((result_dir / "result.json").read_text())
    assert result["poi"] == "mu" and result["data"]["SR"]["data"] == "data"
    assert len(result["parameters"]) == 11 and len(result["impacts"]) == 10
    assert set(result["intervals"]["minos"]) == {"68.27", "95"}
    assert abs(result["yields"]["SR/bkg1"] - 500) < 1e-3  # normalised weights: the declared yields
    for name in ("pulls.png", "scan.png", "correlation.png"):
        assert (result_dir / name).stat().st_size > 0
    # 27 networks: 3 nominal ratios and 24 shape ratios (12 process-NP pairs, up and down)
    assert len(list((tmp_path / "store" / "TrainRatio").iterdir())) == 27


def test_samples_without_model_is_an_error(tmp_path: Path) -> None:
    config = ManyNP().write_samples(tmp_path / "samples", seed=2, n_mc_per_process=50)
    data = yaml.safe_load(config.read_text())
    data.pop("statmodel")
    config.write_text(yaml.safe_dump(data))
    proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("hsbi: error:")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stdout[-2000:]
    assert "no statmodel" in lines[0]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").glob("*/*/manifest.json"))
