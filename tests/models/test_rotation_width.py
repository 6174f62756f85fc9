"""The two-nuisance rotation-width model (exact densities, sampling) and ratio networks
conditioned on two nuisances."""

import json

import numpy as np
import pytest
import torch

from hsbi.estimators import LREEnsemble, RatioNet, load_members, save_member
from hsbi.models import GaussianRotation
from hsbi.models.rotation_width import RotationWidth

MODEL = RotationWidth(radius=2.0)


@pytest.mark.parametrize("nu", [(0.3, 0.7), (np.pi / 4, 1.0), (1.2, 1.6)])
def test_each_process_density_integrates_to_one(nu):
    step = 0.025
    axis = np.arange(-14, 14, step) + step / 2
    xx, yy = np.meshgrid(axis, axis)
    x = np.stack([xx.ravel(), yy.ravel()], axis=1)
    integrals = np.exp(MODEL.log_components(x, np.array([nu]))[0]).sum(0) * step**2
    assert integrals == pytest.approx([1.0, 1.0], abs=1e-6)


def test_unit_width_reduces_to_the_rotation_model():
    x = np.random.default_rng(0).standard_normal((50, 2))
    z = np.array([0.2, 0.9])
    exact = GaussianRotation(radius=2.0).log_components(x, z)
    assert MODEL.log_components(x, np.c_[z, np.ones(2)]) == pytest.approx(exact, abs=1e-12)


def test_background_samples_have_the_nuisance_width():
    """200k draws: the sample std is known to s / sqrt(2 * 200k) = 0.0016 s; allow 5 sigma."""
    rng = np.random.default_rng(3)
    x = MODEL.sample(rng, "background", np.tile([0.4, 1.5], (200_000, 1)))
    assert x.std(0) == pytest.approx([1.5, 1.5], abs=5 * 1.5 / np.sqrt(4e5))
    assert x.mean(0) == pytest.approx(2.0 * np.array([np.cos(0.4), np.sin(0.4)]), abs=5 * 1.5 / np.sqrt(2e5))


def test_two_nuisance_ratio_nets_round_trip_and_evaluate_per_nuisance_point(tmp_path):
    torch.manual_seed(0)
    members = [{p: RatioNet(2, [8, 8], "silu", n_nuisances=2).eval() for p in MODEL.processes} for _ in range(2)]
    for i, m in enumerate(members):
        save_member(tmp_path / str(i), m)
    assert json.loads((tmp_path / "0" / "estimator.json").read_text())["hparams"]["n_nuisances"] == 2
    ens = load_members([tmp_path / "0", tmp_path / "1"])
    x = np.random.default_rng(1).standard_normal((5, 2))
    nu = np.array([[0.7, 0.9], [0.8, 1.1], [0.9, 1.3]])
    out = ens.log_components(x, nu)
    assert out.shape == (3, 5, 2)
    with torch.no_grad():
        for k in range(3):
            inputs = torch.as_tensor(np.c_[x, np.tile(nu[k], (5, 1))], dtype=torch.float32)
            expect = np.mean([[m[p](inputs).numpy() for p in MODEL.processes] for m in members], axis=0).T
            assert out[k] == pytest.approx(expect, abs=1e-5)


def test_one_nuisance_members_keep_their_saved_form(tmp_path):
    """Members saved without ``n_nuisances`` (all before it existed) load as one-nuisance nets."""
    save_member(tmp_path, {p: RatioNet(2, [4]) for p in MODEL.processes})
    assert "n_nuisances" not in json.loads((tmp_path / "estimator.json").read_text())["hparams"]
    ens = LREEnsemble([load_members([tmp_path]).members[0]])
    assert ens.log_components(np.zeros((3, 2)), np.array([0.5, 0.6])).shape == (2, 3, 2)
