"""The exact many-nuisance benchmark: densities, gradient, fits, intervals, Parquet files."""

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from scipy.stats import multivariate_normal

from hsbi.exceptions import ConfigError
from hsbi.models.many_np import ManyNP

MODEL = ManyNP()
OFF_NOMINAL = {"mu": 1.3, "shape_0": 0.8, "shape_1": -0.6, "shape_3": 0.4, "shape_5": 1.1,
               "norm_1": -0.7, "norm_2": 0.5, "lumi": 1.02}


def expected_means(params: dict) -> np.ndarray:
    """Process means from the documented table: m_c + sum_m alpha_m delta_cm e_{d_m}."""
    means = np.array(MODEL.means, dtype=float)
    for name, (d, effects) in zip(MODEL.shape_nps, MODEL.shape_effects):
        for process, delta, _ in effects:
            means[MODEL.processes.index(process), d] += params.get(name, 0.0) * delta
    return means


@pytest.fixture(scope="module")
def observed() -> np.ndarray:
    return MODEL.sample_dataset(np.random.default_rng(7), {"mu": 1.0})


def test_structure_meets_the_benchmark_design():
    assert MODEL.parameters == ("mu", *MODEL.shape_nps, *MODEL.norm_nps, "lumi")
    assert len(MODEL.shape_nps) == 6 and len(MODEL.norm_nps) == 3 and len(MODEL.features) == 4
    pairs = [(d, p) for d, effects in MODEL.shape_effects for p, _, _ in effects]
    assert len(set(pairs)) < len(pairs)  # two NPs shift the same feature of the same process
    for process in MODEL.processes:
        assert sum(p == process for _, p in pairs) >= 2
    for d, effects in MODEL.shape_effects:
        assert 1 <= len(effects) <= 3
        for process, delta, kappa in effects:
            width = MODEL.widths[MODEL.processes.index(process)][d]
            assert 0.05 <= abs(delta) / width <= 0.25 and 0.95 <= kappa <= 1.08


@pytest.mark.parametrize("process", MODEL.processes)
def test_log_density_integrates_to_one(process):
    # importance sampling from q = N(table mean, (1.5 width)^2): E_q[p / q] = 1 within its error
    c, n = MODEL.processes.index(process), 200_000
    cov = np.diag(np.square(MODEL.widths[c])) * 1.5**2
    q = multivariate_normal(expected_means(OFF_NOMINAL)[c], cov)
    x = q.rvs(n, random_state=np.random.default_rng(1))
    ratio = np.exp(MODEL.log_density(x, process, OFF_NOMINAL) - q.logpdf(x))
    error = ratio.std() / math.sqrt(n)
    assert error < 0.005
    assert abs(ratio.mean() - 1.0) < 5 * error


@pytest.mark.parametrize("process", MODEL.processes)
def test_samples_follow_the_density(process):
    c, n = MODEL.processes.index(process), 100_000
    x = MODEL.sample(np.random.default_rng(2), process, n, OFF_NOMINAL)
    mean, width = expected_means(OFF_NOMINAL)[c], np.array(MODEL.widths[c])
    assert np.all(np.abs(x.mean(0) - mean) < 5 * width / math.sqrt(n))
    assert np.all(np.abs(x.std(0) - width) < 5 * width / math.sqrt(2 * n))
    corr = np.corrcoef(x.T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr) < 5 / math.sqrt(n))
    exact = multivariate_normal(mean, np.diag(width**2)).logpdf(x[:1000])
    np.testing.assert_allclose(MODEL.log_density(x[:1000], process, OFF_NOMINAL), exact,
                               rtol=1e-10, atol=1e-10)


def test_yields_follow_the_formula():
    y = MODEL.yields(OFF_NOMINAL)
    lam = 1.02
    assert y["signal"] == pytest.approx(
        lam * 100 * 1.3 * 1.03**0.8 * 0.98**-0.6 * 1.02**0.4 * 1.04**1.1 * 1.04**0.5)
    assert y["bkg1"] == pytest.approx(lam * 500 * 1.05**0.8 * 1.08**0.4 * 0.95**1.1)
    assert y["bkg2"] == pytest.approx(lam * 400 * 1.04**-0.6 * 0.96**0.4 * 1.10**-0.7)
    counts = [len(MODEL.sample_dataset(np.random.default_rng(s), OFF_NOMINAL)) for s in range(50)]
    total = sum(y.values())
    assert abs(np.mean(counts) - total) < 5 * math.sqrt(total / 50)


def test_analytic_gradient_matches_central_differences(observed):
    theta = MODEL._theta(OFF_NOMINAL)
    aux = {"shape_1": 0.3, "norm_0": -0.4, "lumi": 0.99}
    xt, a = observed.T, MODEL._aux(aux)
    value, grad = MODEL._nll_grad(theta, xt, a)
    assert value == pytest.approx(MODEL.nll(observed, OFF_NOMINAL, aux))
    numeric = np.empty_like(grad)
    for j, name in enumerate(MODEL.parameters):
        h = 1e-6
        up = MODEL.nll(observed, {**OFF_NOMINAL, name: theta[j] + h}, aux)
        down = MODEL.nll(observed, {**OFF_NOMINAL, name: theta[j] - h}, aux)
        numeric[j] = (up - down) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5 * np.abs(grad).max())


def test_fit_and_profile_interval_on_a_thousand_events(observed):
    best, nll_min = MODEL.fit(observed)
    errors = MODEL.hessian_errors(observed)
    assert abs(best["mu"] - 1.0) < 3 * errors["mu"]
    assert MODEL.nll(observed, best) == pytest.approx(nll_min, abs=1e-9)
    low, high = MODEL.profile_interval(observed, 0.6827)
    assert low < best["mu"] < high
    assert (high - low) == pytest.approx(2 * errors["mu"], rel=0.2)
    for edge in (low, high):  # t(edge) = 1 (chi2_1 quantile at 68.27%)
        assert 2 * (MODEL.fit(observed, fixed={"mu": edge})[1] - nll_min) == pytest.approx(
            1.0, abs=2e-3)
    low95, high95 = MODEL.profile_interval(observed, 0.95)
    assert low95 < low and high < high95
    conditional, nll_cond = MODEL.fit(observed, fixed={"mu": 0.5})
    assert conditional["mu"] == 0.5 and nll_cond > nll_min


def test_lower_edge_is_zero_without_signal():
    rng = np.random.default_rng(11)
    x, aux = MODEL.sample_toy(rng, {"mu": 0.0})
    assert set(aux) == set(MODEL.parameters[1:])
    best, _ = MODEL.fit(x, aux)
    low, high = MODEL.profile_interval(x, 0.95, aux)
    assert low == 0.0 and high > best["mu"]


def test_bad_names_raise_config_errors(observed):
    with pytest.raises(ConfigError, match="parameter 'sigma'"):
        MODEL.yields({"sigma": 1.0})
    with pytest.raises(ConfigError, match="process 'ttbar'"):
        MODEL.sample(np.random.default_rng(0), "ttbar", 3)
    with pytest.raises(ConfigError, match="aux 'mu'"):
        MODEL.nll(observed, {}, {"mu": 1.0})
    with pytest.raises(ConfigError, match="level"):
        MODEL.profile_interval(observed, 68.0)


def test_write_samples(tmp_path):
    data_params = {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7}
    path = MODEL.write_samples(tmp_path / "a", seed=3, n_mc_per_process=2000,
                               data_params=data_params)
    config = yaml.safe_load(path.read_text())
    samples = {s["name"]: s for s in config["samples"]}
    assert set(samples) == {p.stem for p in path.parent.glob("*.parquet")}
    read = {name: pq.read_table(path.parent / s["files"][0]).to_pydict()
            for name, s in samples.items()}
    for c, process in enumerate(MODEL.processes):
        nominal = read[process]
        assert sum(nominal["w"]) == pytest.approx(MODEL.nominal_yields[c])
        for np_name, (d, effects) in zip(MODEL.shape_nps, MODEL.shape_effects):
            for p, delta, kappa in effects:
                if p != process:
                    continue
                for sign, tag in ((1, "up"), (-1, "down")):
                    varied = read[f"{process}_{np_name}_{tag}"]
                    assert varied["event"] == nominal["event"]
                    shift = np.subtract(varied[f"x{d}"], nominal[f"x{d}"])
                    np.testing.assert_allclose(shift, sign * delta, atol=1e-12)
                    assert sum(varied["w"]) == pytest.approx(MODEL.nominal_yields[c] * kappa**sign)
    events = np.concatenate([read[p]["event"] for p in (*MODEL.processes, "data")])
    assert len(np.unique(events)) == len(events)
    statmodel = config["statmodel"]
    assert statmodel["truth"] == data_params
    channel = statmodel["channels"][0]
    assert channel["data"] in samples and samples["data"]["split"]["test"] == 1.0
    for process in channel["processes"]:
        assert set(process["samples"]) <= set(samples)
        for modifier in process["modifiers"]:
            if modifier["type"] == "normplusshape":
                assert {modifier["up"], modifier["down"]} <= set(samples)
    again = MODEL.write_samples(tmp_path / "b", seed=3, n_mc_per_process=2000,
                                data_params=data_params)
    for file in path.parent.iterdir():
        assert file.read_bytes() == (again.parent / file.name).read_bytes(), file.name
