"""The portable workspace on the exact many-NP benchmark: written from the declared model's
likelihood, fitted again in a process without torch to the same intervals, and its bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hsbi.inference.fitting import fit_summary
from hsbi.inference.workspace import load_workspace, write_workspace
from hsbi.models.many_np import ManyNP
from tests.helpers import fit_only
from tests.inference.many_np_exact import exact_likelihood

SIM = ManyNP()
LEVELS = (0.6827, 0.95)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The exact benchmark (6 shape NPs, 3 normsys NPs, lumi; data thrown at mu = 1,
    shape_0 = 0.5, norm_1 = -0.7), its observed fit in this process (torch datasets, as
    InferProfileLikelihood builds them) and its workspace."""
    tmp = tmp_path_factory.mktemp("ws")
    lik, data, x = exact_likelihood(SIM, tmp, 5000, {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7})
    result = fit_summary(lik, data, LEVELS, 21, log=lambda _: None)
    # one real ONNX network (a small ratio net) stands for the nominal ratio of bkg1: the loader
    # verifies the networks' files; the terms stay the exact ones
    from hsbi.estimators.io import onnx_bytes
    from hsbi.estimators.lre import RatioNet

    net = onnx_bytes(RatioNet(len(SIM.features), [8], "silu", n_nuisances=0).eval())
    write_workspace(tmp / "workspace", lik, data, levels=LEVELS, scan_points=21,
                    networks={("SR", "bkg1", "", ""): [net]}, events={"SR": {"data": x.astype(np.float32)}})
    return result, tmp / "workspace"


def _close(a: float, b: float, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)


def test_fit_only_path_reproduces_the_fit_without_torch(exported: tuple[dict, Path], tmp_path: Path) -> None:
    result, workspace = exported
    proc = fit_only(workspace, "--json", "--quiet", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stderr
    again = json.loads(proc.stdout)
    assert again == json.loads((tmp_path / "result.json").read_text())
    assert all((tmp_path / f"{name}.png").stat().st_size > 0 for name in ("pulls", "scan", "correlation"))
    assert again["parameters"] == result["parameters"] and again["valid"]
    # the figure: the interval to 1e-6 relative (measured: identical bit for bit, the
    # same fused kernels on the same float64 arrays)
    for kind in ("minos", "scan"):
        for level, edges in result["intervals"][kind].items():
            for a, b in zip(again["intervals"][kind][level], edges):
                assert _close(a, b), (kind, level, again["intervals"][kind][level], edges)
    for name, value in result["best_fit"].items():
        assert _close(again["best_fit"][name], value), name
        assert _close(again["errors"][name], result["errors"][name]), name
    assert _close(again["nll_min"], result["nll_min"], rtol=1e-12)
    assert [i["name"] for i in again["impacts"]] == [i["name"] for i in result["impacts"]]
    for a, b in zip(again["impacts"], result["impacts"]):
        for key in ("prefit", "postfit"):
            assert all(_close(u, v, atol=1e-8) for u, v in zip(a[key], b[key])), (a["name"], key)
    assert again["yields"] == {f"SR/{p}": SIM.yields({})[p] for p in SIM.processes}


def test_workspace_follows_hs3_and_pyhf_naming(exported: tuple[dict, Path]) -> None:
    _, workspace = exported
    doc = json.loads((workspace / "workspace.json").read_text())
    assert {"distributions", "data", "likelihoods", "parameter_points", "domains", "analyses", "metadata"} <= set(doc)
    channel = doc["distributions"][0]
    types = {m["type"] for s in channel["samples"] for m in s["modifiers"]}
    assert types == {"normfactor", "lumi", "normsys", "normplusshape"}
    constraints = [d for d in doc["distributions"] if d["type"] == "gaussian_dist"]
    assert {d["x"] for d in constraints} == {*SIM.shape_nps, *SIM.norm_nps, "lumi"}
    assert doc["analyses"][0]["parameters_of_interest"] == ["mu"]
    ws = load_workspace(workspace)
    assert set(ws.networks) == {("SR", "bkg1", "", "")} and ws.networks[("SR", "bkg1", "", "")][0].suffix == ".onnx"
    assert ws.events["SR"]["data"].shape == (len(ws.data.channels[0].w[0]), len(SIM.features))


def _edit(workspace: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy)
    doc = json.loads((copy / "workspace.json").read_text())
    change(copy, doc)
    (copy / "workspace.json").write_text(json.dumps(doc))
    return copy


def _drop_file(copy: Path, doc: dict) -> None:
    (copy / doc["data"][0]["logp"]["file"]).unlink()


def _alter_file(copy: Path, doc: dict) -> None:
    path = copy / doc["distributions"][0]["normalisation"]["lo"]["file"]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))


def _drop_network(copy: Path, doc: dict) -> None:
    (copy / doc["distributions"][0]["samples"][1]["network"][0]["file"]).unlink()


def _unknown_modifier(copy: Path, doc: dict) -> None:
    doc["distributions"][0]["samples"][1]["modifiers"][0]["type"] = "shapesys"


def _no_data(copy: Path, doc: dict) -> None:
    doc["likelihoods"][0]["data"] = []


@pytest.mark.parametrize(("change", "message"), [
    pytest.param(_drop_file, "data[0].logp: file 'arrays/SR.data.logp.", id="missing-file"),
    pytest.param(_drop_network, "distributions[0].samples[1].network[0]: file 'networks/SR.bkg1.nominal.0.",
                 id="missing-network"),
    pytest.param(_alter_file, "distributions[0].normalisation.lo: file 'arrays/SR.normalisation.lo.", id="hash"),
    pytest.param(_unknown_modifier, "distributions[0].samples[1].modifiers[0].type = 'shapesys': expected one of "
                 "normfactor, lumi, normsys, normplusshape", id="unknown-modifier"),
    pytest.param(_no_data, "channel 'SR' has no data in likelihoods[0].data", id="channel-without-data"),
])
def test_bad_workspace_is_one_line(exported: tuple[dict, Path], tmp_path: Path, change, message: str) -> None:
    copy = _edit(exported[1], tmp_path, change)
    proc = fit_only(copy, "--quiet")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in lines if line.startswith("hsbi: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"workspace {copy / 'workspace.json'}: " in errors[0] and message in errors[0], errors[0]
