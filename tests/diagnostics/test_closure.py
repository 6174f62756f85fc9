"""Closure chi2: exact ratios close (chi2 ~ ndf), wrong ones do not."""

import numpy as np

from hsbi.diagnostics import closure_chi2
from hsbi.models import GaussianRotation


def test_exact_ratio_closes_and_unit_weights_do_not():
    model = GaussianRotation()
    rng = np.random.default_rng(0)
    z0, n = np.pi / 4, 40_000
    z_num = rng.uniform(0, np.pi / 2, n)
    num = model.sample(rng, "signal", z_num)
    which = rng.integers(0, 2, n)
    ref = np.where(which[:, None] == 0, model.sample(rng, "signal", np.full(n, z0)),
                   model.sample(rng, "background", np.full(n, z0)))
    z_ref = rng.uniform(0, np.pi / 2, n)
    log_ref = np.log(np.exp(model.log_components(ref, np.array([z0]))[0]).mean(-1))
    log_num = -0.5 * ((ref - model.means(z_ref)[:, 0]) ** 2).sum(1) - np.log(2 * np.pi)
    exact = closure_chi2(num, ref, np.exp(log_num - log_ref))
    for feature in exact:  # chi2 has mean ndf and sd sqrt(2 ndf); allow 4 sd
        assert abs(feature["chi2"] - feature["ndf"]) < 4 * np.sqrt(2 * feature["ndf"])
        assert abs(feature["normalisation"] - 1) < 0.05
    wrong = closure_chi2(num, ref, np.ones(n))
    assert all(f["chi2"] > 10 * f["ndf"] for f in wrong)
