"""The set-estimator chain as real `law run`s (tests/data/sets.yaml, tiny sizes): the bump-hunt
NPE to InferPosterior, the on/off set likelihood to InferSetProfile with its Neyman toys."""

import json

import numpy as np
import pytest
import yaml

from helpers import ROOT

SETS_CONFIG = ROOT / "tests" / "data" / "sets.yaml"
#: the on/off set likelihood (list values cannot go through --set: law splits it at commas)
RATIO = {"model": "on_off", "estimator": "ratio", "truth": [6, 1], "n_train": 2000, "chunk": 1000,
         "parameters": {"poi_prior": [2, 12], "nuisance_prior": [0.7, 1.3]},
         "training": {"max_epochs": 3, "batch_size": 64, "learning_rate": 0.003, "threads": 1}}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """One torch thread in the law processes: small nets, and on shared cores 2 contending
    threads were ~10x slower than 1 (hsbi.config.sets.SetTrainingConfig)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _only(store_root, family):
    (path,) = (store_root / family).iterdir()
    return path


def test_posterior_chain(law_run, store_root):
    proc = law_run("InferPosterior", "--config", str(SETS_CONFIG))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(list((store_root / "SimulateSets").iterdir())) == 3  # 2 train + 1 val chunks
    out = _only(store_root, "InferPosterior")
    result = json.loads((out / "posterior.json").read_text())
    assert set(result["observed"]) == {"set", "exact", "per_event"}
    assert result["streaming"]["steps"] == 10 and result["streaming"]["max_abs_diff_log_density"] < 1e-6
    assert result["sbc"]["sets"] == 10 and len(np.load(out / "posterior.npz")["ranks"]) == 10
    for name in ("posterior.png", "intervals.png", "streaming.png", "sbc.png"):
        assert (out / name).stat().st_size > 1000
    # the ratio tasks refuse an npe config with one line
    proc = law_run("InferSetProfile", "--config", str(SETS_CONFIG))
    assert proc.returncode != 0
    assert "hsbi: error: InferSetProfile: config key 'sets.estimator' = 'npe': expected 'ratio' for InferSetProfile (a 'npe' estimator goes with InferPosterior)" in proc.stdout


def test_set_profile_chain(law_run, store_root, tmp_path):
    data = yaml.safe_load(SETS_CONFIG.read_text())
    data["sets"].update(RATIO)
    config = tmp_path / "sets_ratio.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = law_run("InferSetProfile", "--config", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(list((store_root / "SetNeymanToys").iterdir())) == 2  # 2 grid points x 1 chunk
    result = json.loads((_only(store_root, "InferSetProfile") / "result.json").read_text())
    assert result["neyman_grid"] == [4.0, 8.0]
    for name in ("set", "exact"):
        low, high = result[name]["asymptotic"]["68"]
        assert 2 <= low <= result[name]["best_fit"]["mu"] <= high <= 12
        assert len(result[name]["critical"]["68"]) == 2
        assert np.add(result[name]["toys_per_point"], result[name]["failed_fits"]).tolist() == [10, 10]
    exact = result["exact"]  # 10 toys per point: critical values near the chi2 ones, intervals near Wilks
    assert exact["toys_per_point"] == [10, 10] and exact["neyman"]["68"] is not None
    assert (_only(store_root, "InferSetProfile") / "profile.png").stat().st_size > 1000
    # the same through InferProfileLikelihood with estimator.kind: set
    proc = law_run("InferProfileLikelihood", "--config", str(config), "--set", "estimator.kind=set")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert json.loads((_only(store_root, "InferProfileLikelihood") / "result.json").read_text()) == result
    assert len(list((store_root / "SetNeymanToys").iterdir())) == 2  # nothing re-run
