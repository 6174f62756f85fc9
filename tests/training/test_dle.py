"""DLE members: zuko conditional flows trained with Lightning; normalised, pickle-free."""

import numpy as np
import pytest

from hsbi.config import load_config
from hsbi.data import simulate_training_samples
from hsbi.estimators import DLEEnsemble, load_ensemble, save_dle_member
from hsbi.training import train_dle_member


@pytest.fixture(scope="module")
def trained():
    cfg = load_config("default", ["estimator.kind=dle", "simulation.n_train=3000",
                                  "simulation.n_val=500", "training.max_epochs=2",
                                  "estimator.widths=[32, 32]", "estimator.transforms=2"])
    model = cfg.model.build()
    samples = simulate_training_samples(model, cfg)
    flows, history = train_dle_member(samples, model.processes, cfg.estimator, cfg.training,
                                      seed=3, log=lambda _: None)
    return model, samples, flows, history


def test_flow_density_is_normalised(trained):
    """A flow is a density by construction: its integral over a wide box is 1 (quadrature)."""
    model, _, flows, history = trained
    step = 0.05
    axis = np.arange(-9, 9, step) + step / 2
    xx, yy = np.meshgrid(axis, axis)
    x = np.stack([xx.ravel(), yy.ravel()], axis=1)
    comps = DLEEnsemble([flows]).log_components(x, np.array([0.3, 1.2]))
    integrals = np.exp(comps).sum(axis=1) * step**2  # (K, C)
    np.testing.assert_allclose(integrals, 1.0, atol=0.01)
    assert all(len(h) == 2 for h in history.values())


def test_member_roundtrip_and_kind_dispatch(trained, tmp_path):
    _, samples, flows, _ = trained
    save_dle_member(tmp_path / "m0", flows)
    loaded = load_ensemble([tmp_path / "m0"])
    assert isinstance(loaded, DLEEnsemble)
    x = samples["val_signal_x"][:50]
    zs = np.array([0.2, 0.9])
    np.testing.assert_allclose(loaded.log_components(x, zs), DLEEnsemble([flows]).log_components(x, zs), rtol=1e-6)



def test_float64_copy_is_smooth_in_the_nuisance(trained):
    """``astype(float64)`` evaluates copies of the flows in double precision (for MIGRAD)."""
    import torch

    from tests.helpers import assert_float64_copy_is_smooth

    _, samples, flows, _ = trained
    assert_float64_copy_is_smooth(DLEEnsemble([flows]), samples["val_signal_x"][:200])
    assert next(iter(flows.values())).scale.dtype == torch.float32  # the originals are untouched
