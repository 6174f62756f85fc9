"""A simulator model's likelihood through the one fitting interface (``hsbi.inference.fitting``):
derivatives against an independent NLL, MIGRAD/MINOS/impacts against direct fits and iminuit
on the continuous NLL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsbi.data import Dataset
from hsbi.inference import asymptotic_interval, fit_observed, make_likelihood
from hsbi.inference.fitting import fit, impacts, minos_intervals, profile_scan
from hsbi.inference.minuit import minuit_fits
from hsbi.inference.mixture import MixtureData, MixtureLikelihood, Table
from hsbi.models import GaussianRotation, OnOffMixture

MODEL = GaussianRotation(radius=2.0)
LIK = make_likelihood(MODEL, 1000, aux_sigma=0.1)
DATA = Dataset(MODEL.sample_dataset(np.random.default_rng(1), 0.2, 0.8, 1000), aux=0.75)


def _nll(theta: np.ndarray) -> float:
    """The NLL from the model's normalised densities (differs from hsbi's by a constant)."""
    mu, z = theta
    return float(-MODEL.log_prob(DATA.x, mu, z, 1000).sum() + MODEL.yields(1000, mu, z).sum()
                 + (z - DATA.aux) ** 2 / (2 * 0.1**2))


def _numerical(theta: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    e = np.eye(2) * eps
    grad = np.array([(_nll(theta + d) - _nll(theta - d)) / (2 * eps) for d in e])
    hess = np.array([[(_nll(theta + a + b) - _nll(theta + a - b) - _nll(theta - a + b) + _nll(theta - a - b))
                      / (4 * eps**2) for b in e] for a in e])
    return grad, hess


class _Counting:
    """The exact densities, counting calls."""

    processes = MODEL.processes

    def __init__(self) -> None:
        self.calls = 0

    def log_components(self, x, nuisance):
        self.calls += 1
        return MODEL.log_components(x, nuisance)


def test_derivatives_against_an_independent_nll():
    """Gradient and Hessian (mu analytic, the nuisance by the three-point parabola) against
    central differences of the model's own NLL: inside the range and on both bounds; the value
    differs by one constant (log densities up to a term free of the parameters)."""
    lik = MixtureLikelihood.of(MODEL, LIK, MODEL.nuisance_range, DATA.aux)
    thetas = np.array([[0.3, 0.7], [0.25, 0.0], [0.25, np.pi / 2], [0.05, 0.9]])
    rows = np.zeros(len(thetas), dtype=np.int64)
    value, grad, hess = lik.nll_grad_hess(MixtureData.of([DATA]), torch.as_tensor(thetas), rows=rows)
    offsets = value.numpy() - [_nll(t) for t in thetas]
    np.testing.assert_allclose(offsets, offsets[0], atol=1e-8)
    for k, theta in enumerate(thetas):
        g, h = _numerical(theta)
        np.testing.assert_allclose(grad[k].numpy(), g, rtol=1e-6, atol=1e-4)
        # on a bound the stencil is one-sided: its nuisance curvature is that of z + h (O(h))
        on_bound = theta[1] in MODEL.nuisance_range
        np.testing.assert_allclose(hess[k].numpy(), h, rtol=1e-2 if on_bound else 1e-5, atol=1e-2)


def test_rows_of_one_dataset_share_a_density_call():
    density = _Counting()
    lik = MixtureLikelihood.of(density, LIK, MODEL.nuisance_range, DATA.aux)
    data = MixtureData.of([DATA, Dataset(DATA.x.copy(), DATA.aux)])  # two datasets, five rows
    lik.nll_grad_hess(data.take(np.array([0, 0, 1, 0, 1])), torch.full((5, 2), 0.5, dtype=torch.float64))
    assert density.calls == 2


def test_a_tabulated_dataset_needs_no_density_call():
    """A dataset's log densities tabulated on a 241-point nuisance grid (the seed profile's) and
    interpolated by a cubic spline: value, gradient and Hessian equal the density's to the
    spline's errors, O(dz^4), O(dz^3) and O(dz^2) (dz = pi/2 / 240, dz^2 = 4e-5), with no
    density call; fit_observed fits that way."""
    density = _Counting()
    lik = MixtureLikelihood.of(density, LIK, MODEL.nuisance_range, DATA.aux)
    zs = np.linspace(*MODEL.nuisance_range, 241)
    tabulated = MixtureData.of([DATA], [Table.of(zs, MODEL.log_components(DATA.x, zs))])
    thetas = torch.as_tensor([[0.3, 0.7], [0.25, 0.0], [0.25, np.pi / 2], [0.05, 0.9], [0.2, 0.8001]])
    value, grad, hess = lik.nll_grad_hess(tabulated.take(np.zeros(len(thetas))), thetas)
    assert density.calls == 0
    ref = lik.nll_grad_hess(MixtureData.of([DATA]).take(np.zeros(len(thetas))), thetas)
    np.testing.assert_allclose(value.numpy(), ref[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), ref[1].numpy(), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(hess.numpy(), ref[2].numpy(), rtol=2e-4, atol=1e-2)
    fitted = fit_observed(density, LIK, DATA, MODEL.nuisance_range)
    calls = density.calls  # the seed grid's and the start check's
    fitted.scan([0.1, 0.2, 0.3])
    asymptotic_interval(fitted, 0.95)
    assert density.calls == calls and fitted.data.tables[0] is not None


def test_observed_fit_minos_and_scan_agree():
    """fit_observed (Newton, MIGRAD) equals iminuit's fit of the continuous NLL with numerical
    gradients; MINOS through the fitting interface equals the root of the conditional fits'
    t(mu) and iminuit's MINOS; the profile scan equals t(mu)."""
    obs = fit_observed(MODEL, LIK, DATA, MODEL.nuisance_range)
    ref = minuit_fits(MODEL, LIK, DATA, MODEL.nuisance_range, (0.5, 0.7), (0.6827, 0.95))
    assert obs.best.valid
    assert obs.mu_hat == pytest.approx(ref[0.6827].mu_hat, abs=1e-4 * obs.best.error("mu"))
    assert obs.nuisance_hat == pytest.approx(ref[0.6827].nuisance_hat, abs=1e-3 * obs.sigma_nuisance)
    minos = minos_intervals(obs.lik, obs.data, (0.6827, 0.95), obs.best)
    for level in (0.6827, 0.95):
        wilks = asymptotic_interval(obs, level)
        width = wilks.high - wilks.low
        for edge in (0, 1):
            assert minos[level][edge] == pytest.approx((wilks.low, wilks.high)[edge], abs=1e-3 * width)
            assert minos[level][edge] == pytest.approx(ref[level].interval.low if edge == 0 else
                                                       ref[level].interval.high, abs=1e-3 * width)
    mus = np.linspace(obs.mu_hat - 0.05, obs.mu_hat + 0.05, 5)
    scan = profile_scan(obs.lik, obs.data, mus, obs.best)
    np.testing.assert_allclose(scan.t, obs.scan(mus), atol=1e-5)
    np.testing.assert_allclose(scan.nuisances[:, 1], [obs.nuisance_hat_hat(mu) for mu in mus], atol=1e-5)


def test_impacts_of_the_nuisance():
    """The nuisance's pull and its pre-/post-fit impacts on mu: the shifts of mu_hat with the
    nuisance held at +-1 sigma, as separate conditional fits find them."""
    obs = fit_observed(MODEL, LIK, DATA, MODEL.nuisance_range)
    (impact,) = impacts(obs.lik, obs.data, obs.best)
    assert impact.name == "nuisance"
    assert impact.pull == pytest.approx((obs.nuisance_hat - DATA.aux) / 0.1)
    error = obs.best.error("nuisance")  # HESSE's, mu profiled: the seed grid's curvature width
    assert impact.constraint == pytest.approx(error / 0.1)
    assert error == pytest.approx(obs.sigma_nuisance, rel=0.02)
    for shifts, width in ((impact.prefit, 0.1), (impact.postfit, error)):
        for shift, sign in zip(shifts, (+1, -1)):
            held = fit(obs.lik, obs.data, {"nuisance": obs.nuisance_hat + sign * width})
            assert shift == pytest.approx(held["mu"] - obs.mu_hat, abs=1e-5)


def test_a_fixed_nuisance_and_a_lognormal_constraint():
    """A nuisance range of one point fixes it (mu alone is fitted); a log-normal constraint's
    pre-fit width is relative to the measurement."""
    model = OnOffMixture()
    data = Dataset(model.sample_dataset(np.random.default_rng(4), 6.0, 1.0, 1.0), aux=1.2)
    lik = make_likelihood(model, 1.0, 0.15, constraint="lognormal", nuisance_bounds=(0.5, 2.0))
    fixed = fit_observed(model, lik, data, (1.3, 1.3))
    assert fixed.nuisance_hat == 1.3 and fixed.lik.model.parameters[1].fixed
    free = fit_observed(model, lik, data)
    held = fit(free.lik, free.data, {"nuisance": 1.3})
    assert fixed.mu_hat == pytest.approx(held["mu"], abs=1e-4 * held.error("mu"))
    assert fixed.sigma_nuisance == 0.0
    assert free.lik.model.parameters[1].sigma == pytest.approx(0.15 * 1.2)
