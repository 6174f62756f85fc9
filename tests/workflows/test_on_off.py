"""The on/off mixture end to end through its config (tests/data/on_off.yaml): a real `law run`."""

import json

import numpy as np
import pytest

from helpers import ROOT

from hsbi.config import load_config
from hsbi.data import Dataset
from hsbi.inference import asymptotic_interval, fit_observed, make_likelihood

ON_OFF_CONFIG = ROOT / "tests" / "data" / "on_off.yaml"

pytestmark = pytest.mark.slow


def _only(store_root, family):
    (path,) = (store_root / family).iterdir()
    return path


def test_on_off_end_to_end(law_run, store_root):
    proc = law_run("InferProfileLikelihood", "--config", str(ON_OFF_CONFIG))
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads((_only(store_root, "InferProfileLikelihood") / "result.json").read_text())
    assert result["poi"] == "mu" and result["truth"] == {"mu": 6.0, "nuisance": 1.0}
    assert "signal strength" in result["convention"] and "none constraint" in result["convention"]
    for block in (result, result["exact"]):
        for kind in ("asymptotic", "neyman"):
            for level in ("68", "95"):
                low, high = block["intervals"][kind][level]
                assert 0 <= low < high <= 40

    # the exact intervals are those of the free-nu likelihood on the observed data: the config's
    # `constraint: none` reached the fits (a Gaussian constraint of 0.1 on nu would narrow them)
    arrays = np.load(_only(store_root, "SimulateObserved") / "observed.npz")
    cfg = load_config(ON_OFF_CONFIG)
    model = cfg.model.build()
    fit = fit_observed(model, make_likelihood(model, 1.0, None), Dataset(arrays["x"], float(arrays["aux"])))
    assert result["exact"]["best_fit"]["mu"] == pytest.approx(fit.mu_hat, abs=1e-5)
    for level, key in ((0.6827, "68"), (0.95, "95")):
        iv = asymptotic_interval(fit, level)
        assert result["exact"]["intervals"]["asymptotic"][key] == pytest.approx([iv.low, iv.high], abs=1e-5)
