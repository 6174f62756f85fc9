"""`law run InferProfileLikelihood --config` on a declared model: the user's own analysis runs
(never the embedded default), and bad input is one error line before anything trains."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from hsbi.config.loader import load_config
from hsbi.inference.statmodel import DTYPE, compile_model, process_yields
from hsbi.inference.workspace import load_workspace
from hsbi.models.many_np import ManyNP
from tests.helpers import ROOT, fit_only, run_law

FAST = "training.max_epochs=1,training.members=1,inference.scan_points=11"
#: ingestion in the law process (a dask LocalCluster per sample costs seconds each)
SYNC = ("--IngestSamples-dask-scheduler", "sync")
#: the benchmark with its first two shape NPs: both shift feature x0 of the signal (a correlated
#: pair renormalised together), shape_0 also bkg1's and shape_1 bkg2's; 3 normsys NPs and lumi
SMALL = ManyNP(shape_effects=ManyNP().shape_effects[:2])
#: one shape NP (signal and bkg1): 8 samples to ingest where bad input is to stop the run
TINY = ManyNP(shape_effects=ManyNP().shape_effects[:1])


def _one_error_line(proc: subprocess.CompletedProcess[str], store: Path,
                    before: tuple[str, ...] = ("IngestSamples",)) -> str:
    """The run failed with exactly one ``hsbi: error:`` line (luigi puts its ``ERROR: `` level
    before an error raised in ``run()``), no traceback, and no artifact beyond those of
    ``before`` (the ingested samples); returns the line from ``hsbi: error:``."""
    lines = [line for line in proc.stdout.splitlines() if "hsbi: error:" in line]
    assert proc.returncode != 0 and len(lines) == 1, proc.stdout[-3000:]
    assert lines[0].removeprefix("ERROR: ").startswith("hsbi: error:"), lines[0]
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert {p.parts[-3] for p in store.glob("*/*/manifest.json")} <= set(before)
    return lines[0].removeprefix("ERROR: ")


@pytest.mark.slow
def test_declared_model_runs_end_to_end(tmp_path: Path) -> None:
    config = SMALL.write_samples(tmp_path / "samples", seed=2, n_mc_per_process=800,
                                 data_params={"mu": 1.0, "shape_0": 0.5})
    # one worker: luigi runs the tasks in its own process, where torch and Lightning are imported
    # once (with --workers 2 each TrainRatio branch, in a process of its own, imports them again)
    proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config), "--set", FAST, *SYNC,
                   timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result_dir,) = (tmp_path / "store" / "InferProfileLikelihood").iterdir()
    result = json.loads((result_dir / "result.json").read_text())
    assert result["poi"] == "mu" and result["data"]["SR"]["data"] == "data"
    # mu, 2 shape NPs, 3 normsys NPs, lumi; every parameter but the POI is a constrained NP
    assert result["parameters"] == ["mu", "lumi", "norm_2", "shape_0", "shape_1", "norm_0", "norm_1"]
    assert {i["name"] for i in result["impacts"]} == set(result["parameters"][1:])
    assert set(result["intervals"]["minos"]) == {"68.27", "95"}
    assert abs(result["yields"]["SR/bkg1"] - 500) < 1e-3  # normalised weights: the declared yields
    for name in ("pulls.png", "scan.png", "correlation.png"):
        assert (result_dir / name).stat().st_size > 0
    # 11 networks: 3 nominal ratios and 8 shape ratios (4 process-NP pairs, up and down)
    assert len(list((tmp_path / "store" / "TrainRatio").iterdir())) == 11
    # the model as a portable workspace (networks reused), fitted again by `hsbi fit` in a process
    # that imports no torch: InferProfileLikelihood's numbers to 1e-6 relative; its ONNX networks
    # (ONNX Runtime) give the data's stored per-event terms to float32 rounding
    proc = run_law(tmp_path / "store", "ExportWorkspace", "--config", str(config), "--set", FAST, *SYNC, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(list((tmp_path / "store" / "TrainRatio").iterdir())) == 11
    (export_dir,) = (tmp_path / "store" / "ExportWorkspace").iterdir()
    fitted = fit_only(export_dir / "workspace", "--json", "--quiet")
    assert fitted.returncode == 0 and "HEAVY []" in fitted.stderr, fitted.stderr[-3000:]
    again = json.loads(fitted.stdout)
    close = lambda a, b: abs(a - b) <= 1e-9 + 1e-6 * abs(b)
    for kind in ("minos", "scan"):
        for level, edges in result["intervals"][kind].items():
            assert all(map(close, again["intervals"][kind][level], edges)), (kind, level)
    assert all(close(again["best_fit"][k], v) and close(again["errors"][k], result["errors"][k])
               for k, v in result["best_fit"].items())
    workspace = load_workspace(export_dir / "workspace")
    logp, lo, hi = workspace.evaluate("SR", workspace.events["SR"]["data"])
    stored = workspace.data.channels[0]
    for ours, theirs in ((logp, stored.logp[0]), (lo, stored.lo[0]), (hi, stored.hi[0])):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # binned NSBI of the same model through pyhf (6 bins of the learned log odds): the workspace
    # passes pyhf's schema, pyhf's interval equals hsbi's own binned fit's to 1e-4
    proc = run_law(tmp_path / "store", "ExportPyhf", "--config", str(config), "--set", FAST, "--bins", "6", *SYNC,
                   timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (binned_dir,) = (tmp_path / "store" / "ExportPyhf").iterdir()
    binned = json.loads((binned_dir / "binned.json").read_text())
    assert binned["bins"] == 6 and len(binned["edges"]["SR"]) == 7
    assert binned["difference"]["best_fit"] < 1e-4 and binned["difference"]["edges"] < 1e-4, binned["difference"]
    assert binned["unbinned"]["intervals"] == result["intervals"]["minos"]
    assert len(binned["scan"]["t"]) == 41 and (binned_dir / "binned.png").stat().st_size > 0
    import pyhf

    pyhf.Workspace(json.loads((binned_dir / "pyhf_workspace.json").read_text()))
    hs3 = json.loads((binned_dir / "hs3_workspace.json").read_text())
    assert [d["type"] for d in hs3["distributions"]] == ["histfactory_dist", "gaussian_dist"]
    # the Neyman belt of the same model (networks and fit reused): 3 points, 12 toys each
    belt_set = FAST + ",inference.neyman.points=3,inference.neyman.toys=12"
    proc = run_law(tmp_path / "store", "ConfidenceBelt", "--config", str(config), "--set", belt_set, *SYNC,
                   timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(list((tmp_path / "store" / "TrainRatio").iterdir())) == 11  # nothing retrained
    assert len(list((tmp_path / "store" / "DeclaredNeymanToys").iterdir())) == 3
    (belt_dir,) = (tmp_path / "store" / "ConfidenceBelt").iterdir()
    belt = json.loads((belt_dir / "belt.json").read_text())
    mu_hat = result["best_fit"]["mu"]
    assert len(belt["grid"]) == 3 and belt["toys"] == 12 and set(belt["critical"]) == {"68.27", "95"}
    assert belt["grid"][0] <= mu_hat < belt["grid"][-1]  # around mu_hat (a bound may cut it)
    assert set(belt["intervals"]) == {"68.27", "95"} and belt["minos"] == result["intervals"]["minos"]
    assert (belt_dir / "belt.png").stat().st_size > 0
    # coverage at statmodel.truth from toys of the same model: 20 datasets, 40 reference toys,
    # the mean Wilks width over 5 more
    proc = run_law(tmp_path / "store", "CoverageStudy", "--config", str(config), "--set",
                   FAST + ",inference.coverage.datasets=20,inference.coverage.width_datasets=5", *SYNC, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(list((tmp_path / "store" / "TrainRatio").iterdir())) == 11  # nothing retrained
    (cov_dir,) = (tmp_path / "store" / "CoverageStudy").iterdir()
    cov = json.loads((cov_dir / "coverage.json").read_text())
    assert cov["datasets"] == 20 and cov["reference_toys"] == 40 and set(cov["levels"]) == {"68.27", "95"}
    for level, c in cov["levels"].items():
        assert c["failed_datasets"] == 0 and c["failed_reference"] == 0
        assert abs(c["pull"]) < 3, (level, c)  # binomial error of 20 datasets and 40 toys
    assert (cov_dir / "coverage.png").stat().st_size > 0
    width = cov["mean_width"]  # the Wilks 68.3% interval's, over 5 datasets of their own
    assert width["datasets"] + width["failed"] == 5 and width["datasets"] >= 4 and width["68.27"] > 0
    (checked,) = (tmp_path / "store" / "CheckDeclaredSamples").iterdir()
    checks = json.loads((checked / "yields.json").read_text())
    assert checks["yields"] == pytest.approx({"SR/signal": 100.0, "SR/bkg1": 500.0, "SR/bkg2": 400.0})
    assert sorted(checks["yield_ratios"]) == ["SR/bkg1/shape_0", "SR/bkg2/shape_1", "SR/signal/shape_0",
                                              "SR/signal/shape_1"]
    (data_check,) = (tmp_path / "store" / "CheckDeclaredData").iterdir()
    assert json.loads((data_check / "data.json").read_text()) == {"SR": result["data"]["SR"]["events"]}
    # the same model on asimov and toy data at statmodel.truth (mu = 1, shape_0 = 0.5; networks
    # reused): the Asimov dataset carries the model's expected yield there; the toy is thrown as
    # the toys are (a Poisson count of ~1,000 events). (Networks of one epoch on 800 events fit
    # shape_0 at its bound on every dataset: no statement on the fitted values here.)
    doc = yaml.safe_load(config.read_text())
    for kind in ("asimov", "toy"):
        doc["statmodel"]["channels"][0]["data"] = kind
        (config.parent / f"{kind}.yaml").write_text(yaml.safe_dump(doc))  # sample paths are relative
        proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config.parent / f"{kind}.yaml"),
                       "--set", FAST, *SYNC, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:]
    # nothing retrained: the networks do not depend on the channel's data (blinded and unblinded
    # fits share them), only the data check does
    assert len(list((tmp_path / "store" / "TrainRatio").iterdir())) == 11
    assert len(list((tmp_path / "store" / "CheckDeclaredSamples").iterdir())) == 1
    results = [json.loads(p.read_text()) for p in (tmp_path / "store" / "InferProfileLikelihood").glob("*/result.json")]
    by_kind = {r["data"]["SR"]["data"]: r for r in results}
    assert set(by_kind) == {"data", "asimov", "toy"}
    asimov, toy = by_kind["asimov"], by_kind["toy"]
    # the model's expected yield at the truth (shape_0 = 0.5 moves it through the yield ratios)
    model = compile_model(load_config(str(config)).statmodel,
                          {tuple(k.split("/")): v for k, v in checks["yields"].items()},
                          {tuple(k.split("/")): tuple(v) for k, v in checks["yield_ratios"].items()})
    F, logG = process_yields(model.channels[0], torch.as_tensor(model.truth_point()[None], dtype=DTYPE))
    assert asimov["data"]["SR"]["sum_weights"] == pytest.approx(float((F * torch.exp(logG)).sum()), rel=1e-9)
    assert 850 < toy["data"]["SR"]["events"] == toy["data"]["SR"]["sum_weights"] < 1150


def test_samples_without_model_is_an_error(tmp_path: Path) -> None:
    config = TINY.write_samples(tmp_path / "samples", seed=2, n_mc_per_process=50)
    data = yaml.safe_load(config.read_text())
    data.pop("statmodel")
    config.write_text(yaml.safe_dump(data))
    proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config))
    assert "no statmodel" in _one_error_line(proc, tmp_path / "store")


def _drop_events(samples: Path, cfg: dict) -> None:
    """The up variation of the signal's shape_0 lacks 5 of the nominal's 50 events."""
    path = samples / "signal_shape_0_up.parquet"
    pq.write_table(pq.read_table(path).slice(0, 45), path)


def _zero_weights(samples: Path, cfg: dict) -> None:
    """bkg2 (the only channel's) has zero weights: no expected yield anywhere."""
    next(s for s in cfg["samples"] if s["name"] == "bkg2")["weight"] = "0 * w"


def _negative_weights(samples: Path, cfg: dict) -> None:
    """The signal sample's weights all negative (a sign error)."""
    next(s for s in cfg["samples"] if s["name"] == "signal")["weight"] = "-1 * w"


def _empty_data(samples: Path) -> None:
    """The data sample has no events."""
    path = samples / "data.parquet"
    pq.write_table(pq.read_table(path).slice(0, 0), path)


@pytest.mark.slow
def test_empty_data_stops_before_training(tmp_path: Path) -> None:
    """An observed data sample without events is one error line of CheckDeclaredData, before any
    network trains (the MC check may have run beside it)."""
    config = TINY.write_samples(tmp_path / "samples", seed=2, n_mc_per_process=50)
    _empty_data(config.parent)
    proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config), *SYNC)
    line = _one_error_line(proc, tmp_path / "store", ("IngestSamples", "CheckDeclaredSamples"))
    assert line.startswith("hsbi: error: CheckDeclaredData: statmodel channel 'SR': the data sample 'data' has no "
                           "events"), line


@pytest.mark.slow
@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(_drop_events, "hsbi: error: CheckDeclaredSamples: config key 'statmodel.channels[0].processes[0]"
                 ".modifiers[3].up' = 'signal_shape_0_up': expected the events of the nominal 'signal' (aligned: "
                 "true), or aligned: false; the ", id="aligned-variation-missing-events"),
    pytest.param(_zero_weights, "hsbi: error: CheckDeclaredSamples: config key 'statmodel.channels[0].processes[2]' "
                 "(bkg2): the process's expected yield (the sum of its samples' normalised weights) is 0 in every "
                 "channel; expected a positive yield in at least one channel", id="zero-yield-process"),
    pytest.param(_negative_weights, "hsbi: error: CheckDeclaredSamples: statmodel sample 'signal': all ",
                 id="all-negative-weights"),
])
def test_bad_samples_stop_before_training(tmp_path: Path, edit: Callable[[Path, dict], None], message: str) -> None:
    """What only the ingested samples show is one error line of CheckDeclaredSamples, before
    any network trains (the data check may have run beside it)."""
    config = TINY.write_samples(tmp_path / "samples", seed=2, n_mc_per_process=50)
    cfg = yaml.safe_load(config.read_text())
    edit(config.parent, cfg)
    config.write_text(yaml.safe_dump(cfg))
    proc = run_law(tmp_path / "store", "InferProfileLikelihood", "--config", str(config), *SYNC)
    assert _one_error_line(proc, tmp_path / "store", ("IngestSamples", "CheckDeclaredData")).startswith(message)


def _network_addresses(config: Path, store: Path, monkeypatch: pytest.MonkeyPatch,
                       edit: tuple[str, str, str] | None = None) -> tuple[list[str], str, str]:
    """TrainRatio's branch addresses, CheckDeclaredSamples' and FitDeclaredModel's, computed in
    this process (no run) with ``edit`` = (file, old, new) applied to the project's source as the
    code versions read it."""
    from luigi.task_register import Register

    from hsbi.store import code
    from workflows.statmodel import CheckDeclaredSamples, FitDeclaredModel, TrainRatio

    monkeypatch.setenv("HSBI_STORE", str(store))
    read = code._read
    if edit is not None:
        file, old, new = edit
        assert old in (ROOT / file).read_text(), f"{file} no longer contains {old!r}: update the test"
        monkeypatch.setattr(code, "_read", lambda p: read(p).replace(old, new, 1) if p == ROOT / file else read(p))
    code.clear_code_cache()
    Register.clear_instance_cache()
    try:
        kw = {"config": str(config)}
        branches = [b.address for b in TrainRatio(**kw).get_branch_tasks().values()]
        return branches, CheckDeclaredSamples(**kw).address, FitDeclaredModel(**kw).address
    finally:
        monkeypatch.setattr(code, "_read", read)
        code.clear_code_cache()
        Register.clear_instance_cache()


def test_networks_address_only_what_they_learn_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit of the fitting code (kernels, the model's compilation that checks the samples) or
    of a normsys kappa leaves every network's address in place and moves the fit's; an edit of
    the training code moves every network's and leaves the sample check's in place."""
    config = TINY.write_samples(tmp_path / "samples", seed=2, n_mc_per_process=50)
    store = tmp_path / "store"
    nets, check, fit = _network_addresses(config, store, monkeypatch)
    # 3 members of 3 nominal ratios and of shape_0's up and down ratios of the signal and bkg1
    assert len(nets) == len(set(nets)) == 21
    for edit in (("hsbi/inference/kernels.py", "import numpy as np", "import numpy as np\nnp = np"),
                 ("hsbi/inference/statmodel.py", "import torch", "import torch\ntorch = torch")):
        new_nets, new_check, new_fit = _network_addresses(config, store, monkeypatch, edit)
        assert new_nets == nets and new_fit != fit, edit[0]
    edit = ("hsbi/training/statmodel.py", "import torch", "import torch\ntorch = torch")
    new_nets, new_check, _ = _network_addresses(config, store, monkeypatch, edit)
    assert not set(new_nets) & set(nets) and new_check == check
    cfg = yaml.safe_load(config.read_text())
    normsys = next(m for p in cfg["statmodel"]["channels"][0]["processes"] for m in p["modifiers"]
                   if m["type"] == "normsys")
    normsys["hi"] *= 1.1
    config.write_text(yaml.safe_dump(cfg))
    new_nets, new_check, new_fit = _network_addresses(config, store, monkeypatch)
    assert new_nets == nets and new_check != check and new_fit != fit
