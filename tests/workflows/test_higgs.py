"""The HiggsML case study through real `law run`: the whole DAG on small sizes (ingestion of the
Parquet extract, LRE and DLE training, belts, coverage, report), reproduction, and bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from hsbi.store import Store
from tests.helpers import ROOT, run_law

CONFIG = ROOT / "configs" / "higgs.yaml"
#: small sizes: one member of each kind (the config's training: weaker ones put the LRE's alpha_hat
#: on its bounds), 40 toys at 3 belt points, 100 coverage datasets at 2 points
SMALL = ("training.members=1,estimator.transforms=1,"
         "inference.neyman.points=3,inference.neyman.toys=40,inference.neyman.chunk=40,"
         "inference.coverage.datasets=100")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = tmp_path_factory.mktemp("higgs") / "store"
    proc = run_law(store, "HiggsStudy", "--set", SMALL, "--mu-points", "0.2", "--alpha-points", "0.93,1.07",
                   timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return store, proc.stdout


def test_study_writes_the_report(study):
    store, out = study
    (address,) = Store(store).addresses("HiggsStudy")
    art = Store(store).open("HiggsStudy", address)
    report = (art.path / "report.md").read_text()
    for png in ("features", "coverage", "profile_lre", "profile_dle", "belt_lre", "belt_dle", "closure", "calibration"):
        assert (art.path / f"{png}.png").stat().st_size > 10_000, png
        assert f"({png}.png)" in report
    assert "| mu | alpha | LRE Wilks 68%" in report and "DLE Neyman 95%" in report
    summary = json.loads((art.path / "study.json").read_text())
    points = {(r["kind"], r["mu"], r["nuisance"], r["level"]) for r in summary["coverage"]}
    assert points == {(k, 0.2, a, lv) for k in ("lre", "dle") for a in (0.93, 1.07) for lv in ("68", "95")}
    # the splits never share an event and hold both processes
    assert set(summary["splits"]) == {"train", "validation", "test"}
    assert all(s["events"] > 0 for procs in summary["splits"].values() for s in procs.values())
    assert set(summary["results"]) == {"lre", "dle"} and "exact" not in summary["results"]["lre"]
    # MIGRAD/MINOS on the continuous NLL (networks in float64) converge for both kinds and agree
    # with the grid profile's Wilks edges to 1% of the width
    for kind, result in summary["results"].items():
        for level in ("68", "95"):
            minos, wilks = result["intervals"]["minos"][level], result["intervals"]["asymptotic"][level]
            assert isinstance(minos, list), (kind, level, minos)
            assert minos == pytest.approx(wilks, abs=0.01 * (wilks[1] - wilks[0])), (kind, level)
    assert "report:" in out
    # the shift the pooled datasets share, and the Wilks coverage it predicts, per point and kind
    assert "What the datasets share" in report and "Wilks 68% predicted / measured" in report
    assert all(r["shift"] is not None and 0 < r["wilks_predicted"] < 1 for r in summary["coverage"])
    # where the study's time went: every upstream artifact of this cold run records its own
    timing = json.loads((art.path / "run.json").read_text())
    everything_but_the_report = len(list(Store(store).artifacts())) - 1  # this cold run made the whole store
    assert timing["artifacts"] == timing["timed"] == everything_but_the_report and timing["seconds"] > 0
    assert {"TrainEstimator", "CoverageStudy", "IngestSamples"} <= set(timing["per_family"])
    assert "## Run" in report and "(run.md)" in report
    assert f"from {timing['artifacts']} upstream artifacts" in (art.path / "run.md").read_text()


def _reproduce(store: Path, family: str, address: str, scratch: Path) -> str:
    """`hsbi store reproduce ADDRESS` (a real subprocess): its output, after checking it matched."""
    import subprocess

    from tests.helpers import law_env

    hsbi = str(Path(sys.executable).with_name("hsbi"))
    proc = subprocess.run([hsbi, "--store", str(store), "store", "reproduce", address, "--scratch", str(scratch)],
                          env=law_env(store), cwd=scratch.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"{family}/{address}: MATCH" in proc.stdout, proc.stdout
    return proc.stdout


def test_report_reproduces_but_for_its_run_record(study, tmp_path):
    """`hsbi store reproduce` of the report itself, from copies of its direct inputs: every file
    identical but run.md/run.json, which record the run (present, not compared)."""
    store, _ = study
    (address,) = Store(store).addresses("HiggsStudy")
    out = _reproduce(store, "HiggsStudy", address, tmp_path / "scratch")
    assert re.search(r"run record\s+run\.md", out) and re.search(r"identical\s+report\.md", out), out


def test_coverage_artifact_reproduces(study, tmp_path):
    """`hsbi store reproduce` re-runs one CoverageStudy from its provenance (the recorded config,
    whose sample paths are absolute) in a scratch store and finds the same content."""
    store, _ = study
    _reproduce(store, "CoverageStudy", sorted(Store(store).addresses("CoverageStudy"))[0], tmp_path / "scratch")


def test_missing_column_names_it_and_the_file(tmp_path):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["samples"][0]["files"] = [str(ROOT / "tests/data/higgs/higgsml2014_v2_prefix22889.parquet")]
    cfg["samples"][0]["branches"] = [b.replace("PRI_tau_phi", "PRI_tau_phii") for b in cfg["samples"][0]["branches"]]
    path = tmp_path / "higgs_typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_law(tmp_path / "store", "SimulateSamples", "--config", str(path))
    assert proc.returncode != 0
    assert "PRI_tau_phii" in proc.stdout and "higgsml2014_v2_prefix22889.parquet" in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))


def test_columns_the_model_needs_must_be_ingested(tmp_path):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["samples"][0]["files"] = [str(ROOT / "tests/data/higgs/higgsml2014_v2_prefix22889.parquet")]
    cfg["samples"][0]["branches"] = [b for b in cfg["samples"][0]["branches"] if b != "PRI_lep_eta"]
    path = tmp_path / "higgs_short.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_law(tmp_path / "store", "SimulateSamples", "--config", str(path))
    assert proc.returncode != 0
    assert "hsbi: error: SimulateSamples: sample 'higgsml'" in proc.stdout and "no column 'PRI_lep_eta'" in proc.stdout, \
        proc.stdout[-2000:]
    assert "Traceback" not in proc.stdout


@pytest.mark.parametrize("args, message", [
    (("--alpha-points", "0.93,1.2"), "study point tau energy scale alpha = 1.2 is outside the fitted range [0.9, 1.1]"),
    (("--set", "inference.truth.nuisance=0.85"), "inference.truth.nuisance' = 0.85"),
    (("--set", "model.parameters.alpha_min=-0.2"), "expected 0 < alpha_min < 1 < alpha_max"),
])
def test_bad_tes_values_are_one_line_errors(tmp_path, args, message):
    proc = run_law(tmp_path / "store", "HiggsStudy", *args)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "store").exists()
