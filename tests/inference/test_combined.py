"""Channels combined from their own files: the exact many-NP benchmark's unbinned signal region
(an hsbi workspace) with a binned control region (a pyhf workspace) that measures the bkg2
normalisation NP ``norm_1``, fitted together by ``hsbi fit SR CR`` without torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hsbi.inference.binned import Channel, Process, Sample, binned_spec
from hsbi.inference.combined import fit_combination
from hsbi.inference.workspace import write_workspace
from hsbi.models.many_np import ManyNP
from tests.helpers import fit_only
from tests.inference.many_np_exact import exact_likelihood

SIM = ManyNP()
TRUTH = {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7}
#: the control region: bkg2 (kappa 1.10 per unit of norm_1, as in the signal region) with 1,000
#: events per bin in 3 bins, and 30 signal events (mu = 1) in the last bin
CR_BKG, CR_SIGNAL, KAPPA = 1000.0, 30.0, 1.10


def _control_region(seed: int, lumi_sigma: float) -> dict:
    """A pyhf workspace of the control region, its data thrown at norm_1 = -0.7, mu = 1."""
    rng = np.random.default_rng(seed)
    mc = rng.uniform(0, 3, 300_000)
    signal_mc = rng.uniform(2, 3, 30_000)
    bkg = Process("bkg2", Sample(mc, np.full(len(mc), 3 * CR_BKG / len(mc))), normsys={"norm_1": (1 / KAPPA, KAPPA)})
    sig = Process("signal", Sample(signal_mc, np.full(len(signal_mc), CR_SIGNAL / len(signal_mc))), normfactor="mu")
    expected = np.full(3, CR_BKG * KAPPA ** TRUTH["norm_1"])
    expected[2] += CR_SIGNAL * TRUTH["mu"]
    counts = rng.poisson(expected)
    observed = np.repeat([0.5, 1.5, 2.5], counts)
    return binned_spec([Channel("CR", np.array([0.0, 1.0, 2.0, 3.0]), (bkg, sig), observed)], "mu", lumi_sigma)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("combined")
    lik, data, _ = exact_likelihood(SIM, tmp, 5000, TRUTH)
    write_workspace(tmp / "sr", lik, data, levels=(0.6827, 0.95), scan_points=21)
    (tmp / "cr.json").write_text(json.dumps(_control_region(7, SIM.lumi_sigma)))
    return tmp / "sr", tmp / "cr.json"


def _width(result: dict, level: str = "68.27") -> float:
    low, high = result["intervals"]["minos"][level]
    return high - low


def test_control_region_constrains_its_normalisation_and_narrows_mu(files: tuple[Path, Path]) -> None:
    """Measured: 68.3% MINOS widths SR 0.358 ([0.978, 1.336]), CR 0.790 ([0, 0.790], mu_hat on its
    bound), SR+CR 0.347 ([0.951, 1.298]); norm_1 -0.77 +- 0.70 (SR), -0.59 +- 0.28 (SR+CR)."""
    sr, cr = files
    proc = fit_only(sr, str(cr), "--json", "--quiet")  # the combination, in a process without torch
    assert proc.returncode == 0 and "HEAVY []" in proc.stderr, proc.stderr[-3000:]
    both = json.loads(proc.stdout)
    alone_sr = fit_combination([sr], log=lambda _: None)
    alone_cr = fit_combination([cr], levels=(0.6827, 0.95), scan_points=21, log=lambda _: None)
    proc = fit_only(cr, "--json", "--quiet")  # a pyhf workspace alone: hsbi's binned fit of it
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["best_fit"]["norm_1"] == pytest.approx(alone_cr["best_fit"]["norm_1"], abs=1e-9)
    # one parameter per name: mu, lumi and norm_1 shared, the CR's 3 staterror gammas its own
    assert both["parameters"][0] == "mu" and len(both["parameters"]) == len(alone_sr["parameters"]) + 3
    assert both["valid"] and alone_sr["valid"] and alone_cr["valid"]
    widths = {name: _width(r) for name, r in (("SR", alone_sr), ("CR", alone_cr), ("SR+CR", both))}
    assert widths["SR+CR"] < widths["SR"] < widths["CR"], widths
    # the CR measures norm_1 (3,000 events, 9.5% per unit): the combined fit's error on it is a
    # fraction of the SR's alone, and its value is the CR's truth within that error
    err = {name: r["errors"]["norm_1"] for name, r in (("SR", alone_sr), ("SR+CR", both))}
    assert err["SR+CR"] < 0.5 * err["SR"], err
    assert abs(both["best_fit"]["norm_1"] - TRUTH["norm_1"]) < 2.5 * err["SR+CR"], (both["best_fit"]["norm_1"], err)
    pull = next(i for i in both["impacts"] if i["name"] == "norm_1")
    assert pull["constraint"] < 0.5  # post-fit error over the pre-fit width


def test_inconsistent_shared_parameter_is_one_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    sr, _ = files
    bad = tmp_path / "cr.json"
    bad.write_text(json.dumps(_control_region(7, 0.05)))
    proc = fit_only(sr, str(bad), "--quiet")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hsbi: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "combination: parameter 'lumi' is a lumi (constraint width 0.02)" in errors[0], errors[0]
    assert "(constraint width 0.05)" in errors[0]
