"""A real `law run Ensemble` on the micro analysis with three members: the artifact's files, a
loadable combination, and closure of the combined ensemble below its worst member."""

import json

import numpy as np
import pytest

from helpers import MICRO_CONFIG
from hsbi.estimators import load_combined

pytestmark = pytest.mark.slow


def test_ensemble_artifact_and_closure_below_worst_member(law_run, store_root):
    proc = law_run("Ensemble", "--config", str(MICRO_CONFIG), "--set", "training.members=3")
    assert proc.returncode == 0, proc.stdout[-3000:]
    (art,) = (store_root / "Ensemble").iterdir()
    assert {"ensemble.json", "combination.json", "closure.png", "calibration.png", "manifest.json"} <= {
        p.name for p in art.iterdir()
    }
    report = json.loads((art / "ensemble.json").read_text())
    assert report["method"] == "mean" and report["members"] == 3
    assert set(report["closure"]) == {"ensemble", "member 0", "member 1", "member 2"}
    for proc_name, features in report["closure_vs_worst_member"].items():
        for f, entry in enumerate(features):
            assert entry["ensemble"] < entry["worst_member"], (proc_name, f, entry)
    manifest = json.loads((art / "manifest.json").read_text())
    members = [store_root / "TrainEstimator" / a for a in manifest["inputs"]["estimator"]]
    combined = load_combined(members, art / "combination.json")
    x = np.zeros((4, 2))
    assert combined.log_components(x, np.array([0.5, 1.0])).shape == (2, 4, 2)
    assert combined.spread(x, np.array([0.5])).shape == (1, 4, 2)
