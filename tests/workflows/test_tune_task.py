"""TuneHyperparameters as a real `law run`: a tiny search on a local Ray; a bad --ray-address."""

from __future__ import annotations

import csv
import json
import socket

from helpers import ROOT

TUNE_CONFIG = ROOT / "tests" / "data" / "tune.yaml"


def test_tune_writes_best_trials_and_plot_and_feeds_training(law_run, store_root):
    proc = law_run("TuneHyperparameters", "--config", str(TUNE_CONFIG))
    assert proc.returncode == 0, proc.stdout[-3000:]
    (artifact,) = (store_root / "TuneHyperparameters").iterdir()
    assert {p.name for p in artifact.iterdir()} >= {"best.json", "trials.csv", "history.csv", "tune.png", "manifest.json"}
    best = json.loads((artifact / "best.json").read_text())
    assert best["objective"] == "closure_chi2_ndf"
    assert set(best["overrides"]) == {"training.learning_rate", "estimator.widths"}
    trials = list(csv.DictReader((artifact / "trials.csv").open()))
    assert len(trials) == 3 and {t["status"] for t in trials} <= {"completed", "stopped"}
    row = trials[best["metrics"]["trial"]]
    assert row["status"] == "completed" and float(row["closure_chi2_ndf"]) == best["metrics"]["closure_chi2_ndf"]
    assert sum("tune: trial" in line for line in proc.stdout.splitlines()) == 3, proc.stdout[-3000:]
    # --ray-address is not significant: the same address with it
    shown = law_run("TuneHyperparameters", "--config", str(TUNE_CONFIG), "--ray-address", "auto", "--print-output", "0")
    assert artifact.name in shown.stdout, shown.stdout
    # tune.apply: TrainEstimator requires the search and trains with its best values
    proc = law_run("TrainEstimator", "--config", str(TUNE_CONFIG), "--set", "tune.apply=true")
    assert proc.returncode == 0, proc.stdout[-3000:]
    (member,) = (store_root / "TrainEstimator").iterdir()
    assert json.loads((member / "manifest.json").read_text())["inputs"]["tune"] == artifact.name
    hparams = json.loads((member / "estimator.json").read_text())["hparams"]
    assert hparams["widths"] == best["overrides"]["estimator.widths"]


def test_unreachable_ray_address_is_one_line_and_writes_nothing(law_run, store_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing answers there
    proc = law_run("TuneHyperparameters", "--config", str(TUNE_CONFIG), "--ray-address", f"127.0.0.1:{port}")
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    errors = [line for line in proc.stdout.splitlines() if line.startswith("hsbi: error:")]
    assert errors == [f"hsbi: error: TuneHyperparameters: --ray-address '127.0.0.1:{port}': no Ray cluster "
                      "answers there (Connection refused); start one with `ray start --head`, or leave "
                      "--ray-address out for a local Ray"], proc.stdout
    assert not store_root.exists() or not any(store_root.iterdir())
