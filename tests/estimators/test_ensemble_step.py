"""hsbi.training.ensemble.combine_ensemble on simulated validation samples: every combination
and calibration gives a JSON-able report and plots; bad input is a ConfigError / DataError."""

import json

import numpy as np
import pytest
import torch

from hsbi.config import load_config
from hsbi.data import simulate_training_samples
from hsbi.estimators import FlowNet, LREEnsemble, RatioNet, save_dle_member
from hsbi.exceptions import ConfigError, DataError
from hsbi.training.ensemble import combine_ensemble


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("default", ["simulation.n_train=10", "simulation.n_val=400"])
    samples = simulate_training_samples(cfg.model.build(), cfg)
    torch.manual_seed(0)
    ens = LREEnsemble([{p: RatioNet(2, [8]).eval() for p in ("signal", "background")} for _ in range(2)])
    return samples, ens


@pytest.mark.parametrize("method, calibration, normalise",
                         [("mean", "none", False), ("median", "temperature", False), ("weighted", "isotonic", True)])
def test_report_is_json_and_plots_are_written(setup, tmp_path, method, calibration, normalise):
    samples, ens = setup
    plot_dir = tmp_path if normalise else None  # plots take seconds: one case is enough
    combined, report = combine_ensemble(ens, samples, method, calibration, normalise, plot_dir=plot_dir)
    report = json.loads(json.dumps(report))
    assert report["events"]["signal"] == {"fit": 400, "test": 400}
    assert set(report["closure"]) >= {"ensemble", "member 0", "member 1"}
    assert ("uncalibrated" in report["ece"]) == (calibration != "none" or normalise)
    assert len(report["closure_vs_worst_member"]["background"]) == 2
    assert all(f["normalisation_error"] > 0 for f in report["closure"]["ensemble"]["signal"])
    assert (tmp_path / "closure.png").exists() == (tmp_path / "calibration.png").exists() == normalise
    if calibration != "none":  # calibrated on the fit half, the test half's BCE does not get worse by much
        assert report["bce"]["ensemble"]["signal"] < report["bce"]["uncalibrated"]["signal"] + 0.05
    assert combined.log_components(samples["val_signal_x"][:5], np.array([0.3])).shape == (1, 5, 2)


def test_bad_input_is_a_user_error(setup, tmp_path):
    samples, ens = setup
    with pytest.raises(ConfigError, match="estimator.combine"):
        combine_ensemble(ens, samples, "vote")
    with pytest.raises(ConfigError, match="estimator.calibration"):
        combine_ensemble(ens, samples, "mean", "platt")
    with pytest.raises(DataError, match="val_reference_x"):
        combine_ensemble(ens, {k: v for k, v in samples.items() if k != "val_reference_x"})
    save_dle_member(tmp_path / "m0", {p: FlowNet(2, [8], 1) for p in ("signal", "background")})
    with pytest.raises(ConfigError, match="estimator.kind"):
        combine_ensemble([tmp_path / "m0"], samples)
