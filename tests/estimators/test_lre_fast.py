"""LREEnsemble's fused evaluation against a straightforward one: every member's network on
``cat([x, z])``, the logits averaged over members (float64 networks, so the float32 ensemble's
own rounding is all that differs)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hsbi.estimators import LREEnsemble, RatioNet
from hsbi.estimators.lre import _BLOCK_ROWS

PROCESSES = ("signal", "background", "other")


def _members(widths: list[int], activation: str, nuisances: int, n_members: int = 2, gain: float = 2.0,
             seed: int = 0) -> list[dict[str, RatioNet]]:
    """Networks with non-trivial standardisation and weights scaled by ``gain`` (pre-activations of
    several units, some past the kernels' factoring bound at larger gains)."""
    torch.manual_seed(seed)
    members = []
    for _ in range(n_members):
        nets = {p: RatioNet(2, widths, activation, n_nuisances=nuisances).eval() for p in PROCESSES}
        for net in nets.values():
            net.shift.copy_(0.5 * torch.randn(2 + nuisances))
            net.scale.copy_(torch.rand(2 + nuisances) + 0.5)
            with torch.no_grad():
                for param in net.parameters():
                    param.mul_(gain)
        members.append(nets)
    return members


def _double(net: RatioNet) -> RatioNet:
    copy = RatioNet(**net.hparams).double().eval()
    copy.load_state_dict(net.state_dict())
    return copy


def _reference(members: list[dict[str, RatioNet]], x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(M, N, C)``: every network's logits on the rows ``cat([x_i, z_i])`` (in float64)."""
    inputs = torch.as_tensor(np.c_[x, z], dtype=torch.float64)
    with torch.no_grad():
        return np.stack([np.stack([_double(m[p])(inputs).numpy() for p in PROCESSES], -1) for m in members])


def _grid_reference(members: list[dict[str, RatioNet]], x: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """``(K, n, C)``: the mean over members at every (nuisance value, event)."""
    zs = zs.reshape(len(zs), -1)
    return np.stack([_reference(members, x, np.repeat(z[None], len(x), 0)).mean(0) for z in zs])


def _assert_close(got: np.ndarray, want: np.ndarray, tol: float) -> None:
    assert got.shape == want.shape and got.dtype == np.float64
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= tol * scale, np.abs(got - want).max() / scale


CASES = list(itertools.product(["silu", "relu", "tanh", "elu"], [[64, 64], [32], [], [16, 24, 8]], [1, 2]))


@pytest.mark.parametrize(("activation", "widths", "nuisances"), CASES)
def test_log_components_match_the_plain_evaluation(activation: str, widths: list[int], nuisances: int) -> None:
    members = _members(widths, activation, nuisances)
    rng = np.random.default_rng(1)
    x = 2.0 * rng.standard_normal((203, 2))
    zs = rng.uniform(0.5, 1.0, (5, nuisances)) if nuisances > 1 else np.linspace(0.5, 1.0, 5)
    ens = LREEnsemble(members)
    want = _grid_reference(members, x, zs)
    _assert_close(ens.log_components(x, zs), want, 1e-5)  # K > 1: the factored first layer
    _assert_close(ens.log_components(x, zs[:1]), want[:1], 1e-5)  # K = 1
    _assert_close(ens.astype(torch.float64).log_components(x, zs), want, 1e-12)
    z_events = rng.uniform(0.5, 1.0, (len(x), nuisances)) if nuisances > 1 else rng.uniform(0.5, 1.0, len(x))
    want_members = _reference(members, x, z_events.reshape(len(x), -1))
    _assert_close(ens.member_log_ratios(x, z_events), want_members, 1e-5)
    _assert_close(ens.astype(torch.float64).member_log_ratios(x, z_events), want_members, 1e-12)


@pytest.mark.parametrize("activation", ["silu", "tanh", "elu"])
def test_large_pre_activations_leave_the_factored_path(activation: str) -> None:
    """Weights large enough that the first layer's exp factors would overflow: those units take
    the direct evaluation (and the results still match)."""
    members = _members([16, 16], activation, 1, gain=30.0)
    x = 3.0 * np.random.default_rng(2).standard_normal((50, 2))
    zs = np.linspace(-2.0, 2.0, 4)
    _assert_close(LREEnsemble(members).log_components(x, zs), _grid_reference(members, x, zs), 1e-5)


def test_blocks_split_many_nuisance_values_and_odd_event_counts() -> None:
    """More nuisance values than a block's rows (one event per block) and event counts that do
    not fill the last block."""
    members = _members([8, 8], "silu", 2, n_members=3)
    rng = np.random.default_rng(3)
    zs = rng.uniform(0.0, 1.0, (_BLOCK_ROWS + 37, 2))
    x = rng.standard_normal((3, 2))
    _assert_close(LREEnsemble(members).log_components(x, zs), _grid_reference(members, x, zs), 1e-5)
    x = rng.standard_normal((1001, 2))
    _assert_close(LREEnsemble(members).log_components(x, zs[:3]), _grid_reference(members, x, zs[:3]), 1e-5)
    _assert_close(LREEnsemble(members, chunk=100).log_components(x, zs[:7]), _grid_reference(members, x, zs[:7]),
                  1e-5)


def test_the_same_nuisance_value_gives_the_same_float32_values_and_nan_propagates() -> None:
    members = _members([64, 64], "silu", 1)
    ens = LREEnsemble(members)
    x = np.random.default_rng(4).standard_normal((20, 2))
    x[3, 0] = np.nan
    out = ens.log_components(x, np.array([0.7, 0.7, 0.8]))
    assert np.array_equal(out[0], out[1], equal_nan=True)
    assert np.isnan(out[:, 3]).all() and np.isfinite(np.delete(out, 3, axis=1)).all()
    assert ens.log_components(x[:0], np.array([0.7])).shape == (1, 0, len(PROCESSES))
