"""Code-4 interpolation against pyhf's normsys code 4 (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from hsbi.models.interpolation import code4, code4_log_derivatives

pyhf = pytest.importorskip("pyhf")

KAPPAS = [(0.9, 1.1), (0.5, 1.8), (1.2, 0.95), (0.97, 1.02), (0.3, 3.0), (1.0, 1.0)]


def _pyhf_code4(alphas: np.ndarray, lo: float, hi: float) -> np.ndarray:
    pyhf.set_backend("numpy", precision="64b")
    interp = pyhf.interpolators.code4([[[[lo], [1.0], [hi]]]])
    return np.asarray(interp(np.array([alphas]))).reshape(len(alphas))  # the factor itself


@pytest.mark.parametrize(("lo", "hi"), KAPPAS)
def test_code4_equals_pyhf(lo: float, hi: float) -> None:
    alphas = np.linspace(-3, 3, 601)
    ours = code4(alphas, lo, hi)
    ref = _pyhf_code4(alphas, lo, hi)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("lo", "hi"), KAPPAS)
def test_log_derivatives_match_finite_differences(lo: float, hi: float) -> None:
    alphas = np.concatenate([np.linspace(-2.5, 2.5, 41), [-0.999, 0.999, 1.001, -1.001, 0.0]])
    value, d1, d2 = code4_log_derivatives(alphas, np.log(lo), np.log(hi))
    np.testing.assert_allclose(value, np.log(code4(alphas, lo, hi)), atol=1e-12)
    h = 1e-5
    up, down = (np.log(code4(alphas + s, lo, hi)) for s in (h, -h))
    np.testing.assert_allclose(d1, (up - down) / (2 * h), atol=1e-6)
    np.testing.assert_allclose(d2, (up - 2 * value + down) / h**2, atol=2e-3)


def test_continuity_at_one() -> None:
    for lo, hi in KAPPAS:
        for a in (-1.0, 1.0):
            v = code4_log_derivatives(np.array([a - 1e-9, a + 1e-9]), np.log(lo), np.log(hi))
            for part in v:
                assert abs(part[0] - part[1]) < 1e-6
