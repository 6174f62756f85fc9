"""The exact likelihood of the Gaussian-rotation model: normalised, and its MLE unbiased."""

import numpy as np
import pytest

from hsbi.data import Dataset
from hsbi.inference import fit_observed, make_likelihood
from hsbi.models import GaussianRotation

MODEL = GaussianRotation(radius=2.0)


@pytest.mark.parametrize("mu", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("z", [0.0, 0.7, np.pi / 2])
def test_density_integrates_to_one(mu, z):
    step = 0.02
    axis = np.arange(-10, 10, step) + step / 2
    xx, yy = np.meshgrid(axis, axis)
    x = np.stack([xx.ravel(), yy.ravel()], axis=1)
    integral = np.exp(MODEL.log_prob(x, mu, z, n_expected=1000)).sum() * step**2
    assert integral == pytest.approx(1.0, abs=1e-6)


def test_samples_follow_the_means():
    rng = np.random.default_rng(3)
    z = np.full(200_000, 0.4)
    for proc, sign in (("signal", -1), ("background", 1)):
        x = MODEL.sample(rng, proc, z)
        expected = sign * 2.0 * np.array([np.cos(0.4), np.sin(0.4)])
        # the mean of 200k unit-variance draws is known to 1/sqrt(200k) = 0.0022; allow 5 sigma
        assert np.allclose(x.mean(0), expected, atol=5 / np.sqrt(len(z)))


def test_extended_count_is_poisson():
    rng = np.random.default_rng(4)
    counts = [len(MODEL.sample_dataset(rng, 0.2, 0.5, 400)) for _ in range(400)]
    # mean 400, standard error sqrt(400 / 400) = 1: allow 4 sigma
    assert np.mean(counts) == pytest.approx(400, abs=4)
    assert np.var(counts) == pytest.approx(400, rel=0.3)  # var of a variance: ~sqrt(2/400) = 7%


def test_mle_is_unbiased_on_large_samples():
    """30 datasets of 20,000 events: mean MLE within 3 standard errors of the truth."""
    rng = np.random.default_rng(5)
    truth_mu, truth_z = 0.3, 0.35 * np.pi
    lik = make_likelihood(MODEL, 20_000, aux_sigma=1e6)  # no constraint: the data alone
    window = (truth_z - 0.1, truth_z + 0.1)  # sigma_z ~ 0.005 at 20k events: +-20 sigma
    fits = [
        fit_observed(
            MODEL, lik, Dataset(MODEL.sample_dataset(rng, truth_mu, truth_z, 20_000), truth_z),
            window, points=41,
        )
        for _ in range(30)
    ]
    mus = np.array([f.mu_hat for f in fits])
    zs = np.array([f.nuisance_hat for f in fits])
    assert abs(mus.mean() - truth_mu) < 3 * mus.std(ddof=1) / np.sqrt(len(mus))
    assert abs(zs.mean() - truth_z) < 3 * zs.std(ddof=1) / np.sqrt(len(zs))
