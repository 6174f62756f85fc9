"""The declared model's likelihood against the exact many-NP benchmark, and its config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hsbi.config.loader import load_config
from hsbi.exceptions import ConfigError
from hsbi.inference.fitting import fit
from hsbi.inference.statmodel import DTYPE
from hsbi.models.many_np import ManyNP
from tests.inference.many_np_exact import exact_likelihood

SIM = ManyNP()
#: nominal events per process renormalising the shape product: the tests against the exact
#: likelihood take the default of statmodel.normalisation_events (their tolerances follow from
#: its residual); those of the likelihood against itself (derivatives, batched against single
#: fits) a smaller sample, where each NLL costs a quarter
N_NORM_EXACT, N_NORM_SELF = 20000, 5000


@pytest.fixture(scope="module")
def exact_benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return _benchmark(tmp_path_factory.mktemp("mnp"), N_NORM_EXACT)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return _benchmark(tmp_path_factory.mktemp("mnp"), N_NORM_SELF)


def _benchmark(tmp: Path, n_norm: int) -> tuple:
    """hsbi's likelihood built from the benchmark's exact densities and shape ratios at +-1
    (normalisation: ``n_norm`` events per process), and a dataset thrown at mu = 1,
    shape_0 = 0.5, norm_1 = -0.7."""
    return exact_likelihood(SIM, tmp, n_norm, {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7})


def test_gradient_is_exact(benchmark: tuple) -> None:
    lik, data, _ = benchmark
    theta = lik.model.point({"mu": 1.2, "shape_0": 0.3, "shape_5": -1.4, "norm_1": 0.5, "lumi": 1.01})
    _, grad = lik.value_and_grad(data, theta)
    h = 1e-6
    num = [(lik.value(data, theta + h * e) - lik.value(data, theta - h * e)) / (2 * h) for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-4)


def test_nll_equals_exact_up_to_interpolation(exact_benchmark: tuple) -> None:
    """Exact ratios at +-1: the NLL equals the exact one there (1e-6) and differs elsewhere only by
    code 4's polynomial inside |alpha| < 1 and the normalisation sample's second-order residual,
    of order n_c / sqrt(n_norm) * std(r) * |alpha - 1| |alpha + 1| / 2 ~ 500 / 141 * 0.15 * 0.6
    ~ 0.3 at most, 0.05 typically (measured 0.027 and 0.071 at the largest over two samples)."""
    lik, data, x = exact_benchmark
    ref = lik.value(data, lik.model.point({})) - SIM.nll(x, {})
    for name in SIM.shape_nps:
        for a in (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5):
            diff = lik.value(data, lik.model.point({name: a})) - SIM.nll(x, {name: a}) - ref
            assert abs(diff) < 0.3, (name, a, diff)
        for a in (-1.0, 1.0):  # exact there up to the yields' and densities' rounding
            assert abs(lik.value(data, lik.model.point({name: a})) - SIM.nll(x, {name: a}) - ref) < 1e-6


def test_fit_matches_exact_fit(exact_benchmark: tuple) -> None:
    lik, data, x = exact_benchmark
    ours = fit(lik, data)
    exact, _ = SIM.fit(x)
    assert ours.valid
    sigma_mu = ours.error("mu")
    assert abs(ours["mu"] - exact["mu"]) < 0.02 * sigma_mu
    for name in (*SIM.shape_nps, *SIM.norm_nps):
        assert abs(ours[name] - exact[name]) < 0.05, name  # unit constraints: 0.05 sigma


def _write(tmp_path: Path, edit: callable) -> Path:
    path = SIM.write_samples(tmp_path, seed=1, n_mc_per_process=50)
    cfg = yaml.safe_load(path.read_text())
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _sample(cfg: dict, name: str) -> dict:
    return next(s for s in cfg["samples"] if s["name"] == name)


def _modifier(cfg: dict, process: int, index: int) -> dict:
    return cfg["statmodel"]["channels"][0]["processes"][process]["modifiers"][index]


MODIFIER = "statmodel.channels[0].processes[0].modifiers[3]"  # signal's shape_0 (normplusshape)


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(lambda c: _modifier(c, 0, 3).update(up="nosuch"),
                 f"config key '{MODIFIER}.up' = 'nosuch': expected an ingested sample", id="unknown-sample"),
    pytest.param(lambda c: _sample(c, "signal_shape_0_up").update(branches=["x0", "x1", "x2", "event"]),
                 f"config key '{MODIFIER}.up' = 'signal_shape_0_up': expected a sample storing the features "
                 "['x0', 'x1', 'x2', 'x3'] of channel 'SR'; it stores ['x0', 'x1', 'x2', 'event'], without ['x3']",
                 id="variation-schema"),
    pytest.param(lambda c: _modifier(c, 0, 3).update(up=[], down=[], weight_up="w_up", weight_down="w_dn"),
                 f"config key '{MODIFIER}.weight_up/weight_down' = ['w_up', 'w_dn']: expected columns of the "
                 "nominal sample 'signal'", id="weight-columns"),
    pytest.param(lambda c: _sample(c, "signal_shape_0_down")["split"].update(seed=1),
                 f"config key '{MODIFIER}.down' = 'signal_shape_0_down': expected a sample with the event_key and "
                 "split of the nominal 'signal'", id="aligned-variation-split"),
    pytest.param(lambda c: _modifier(c, 0, 2).update(lo=0.0), "a kappa > 0", id="kappa-not-positive"),
    pytest.param(lambda c: c["statmodel"]["parameters"].append({"name": "mu", "sigma": 0.1}) or
                 c["statmodel"]["parameters"].pop(0), "no sigma: a normfactor", id="constrained-poi"),
    pytest.param(lambda c: _sample(c, "data").update(branches=["x0", "x1", "x3"]),
                 "config key 'statmodel.channels[0].data' = 'data': expected a sample storing the features "
                 "['x0', 'x1', 'x2', 'x3'] of channel 'SR'; it stores ['x0', 'x1', 'x3'], without ['x2']",
                 id="data-feature"),
    pytest.param(lambda c: c["statmodel"].update(poi="shape_0"), "the name of a normfactor", id="poi-not-normfactor"),
    pytest.param(lambda c: c.pop("samples"), "a samples section", id="no-samples"),
])
def test_bad_model_is_one_line(tmp_path: Path, edit: callable, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, edit))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_analytic_hessian_equals_autograd(benchmark: tuple) -> None:
    """nll_grad_hess (the normalisation's curvature included, on both sides of |alpha| = 1) against autograd."""
    from hsbi.inference.derivatives import nll_grad_hess
    from hsbi.inference.statmodel import nll

    lik, data, _ = benchmark
    theta = lik.model.point({"mu": 0.7, "shape_0": 1.3, "shape_1": -0.4, "shape_5": -1.6, "norm_0": 0.5,
                             "lumi": 0.99})
    t = torch.as_tensor(theta[None], dtype=DTYPE).requires_grad_(True)
    (g,) = torch.autograd.grad(nll(lik.model, lik.norms, data, t).sum(), t, create_graph=True)
    auto = torch.stack([torch.autograd.grad(g[0, k], t, retain_graph=True)[0][0] for k in range(len(theta))])
    _, grad, hess = nll_grad_hess(lik.model, lik.norms, data, t.detach())
    np.testing.assert_allclose(grad[0].numpy(), g[0].detach().numpy(), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(hess[0].numpy(), auto.numpy(), rtol=1e-9, atol=1e-7)


def test_batched_newton_reaches_the_minuit_minimum(benchmark: tuple) -> None:
    """The batched fit (global and with mu fixed) ends where MIGRAD does."""
    from hsbi.inference.batched_fit import fit_batch

    lik, data, _ = benchmark
    free = fit(lik, data, hesse=False)
    cond = fit(lik, data, {"mu": 1.4}, hesse=False)
    starts = np.stack([lik.model.init, lik.model.point({"mu": 1.4})])
    fixed = np.zeros(len(lik.model.names), bool)
    glob = fit_batch(lik, data, starts[:1])
    mu_fixed = fit_batch(lik, data, starts[1:], fixed=np.where(np.arange(len(fixed)) == 0, True, fixed))
    assert glob.converged.all() and mu_fixed.converged.all()
    for res, ref in ((glob, free), (mu_fixed, cond)):
        assert res.nll[0] <= ref.nll + 1e-4
        np.testing.assert_allclose(res.theta[0], ref.values, atol=2e-3)


def test_batched_impacts_equal_single_conditional_fits(benchmark: tuple) -> None:
    from hsbi.inference.fitting import impacts

    lik, data, _ = benchmark
    best = fit(lik, data)
    ranked = impacts(lik, data, best)
    assert len(ranked) == 10
    for imp in ranked[:2]:
        j = lik.model.index(imp.name)
        for sign, delta in zip((1, -1), imp.postfit):
            cond = fit(lik, data, {imp.name: best.values[j] + sign * best.errors[j]}, hesse=False)
            assert abs(cond["mu"] - best["mu"] - delta) < 2e-3 * best.error("mu")
