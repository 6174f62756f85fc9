"""Coverage study on the exact likelihood: Wilks and Neyman near nominal on 1,000 datasets."""

import numpy as np
import pytest

from hsbi.config import load_config
from hsbi.inference.coverage import coverage_study


def test_coverage_within_two_binomial_errors(tmp_path):
    cfg = load_config("default", ["inference.coverage.datasets=1000", "inference.coverage.width_datasets=5"])
    model = cfg.model.build()
    summary, t_values = coverage_study(cfg, {"exact": model}, model, progress=lambda _: None)
    exact = summary["exact"]
    assert exact["failed_fits"] == 0 and len(t_values["exact"]) == 1000
    for key, nominal in (("68", 0.6827), ("95", 0.95)):
        se = np.sqrt(nominal * (1 - nominal) / 1000)
        for kind in ("asymptotic", "neyman"):
            assert abs(exact[key][kind]["value"] - nominal) < 2 * se, (key, kind, exact[key])
    # the mean 68.3% width (5 datasets) near the Asimov expected width, 0.0264
    assert exact["mean_width"]["68"] == pytest.approx(0.0263, rel=0.1)


class _Mismodelled:
    """The exact rotation densities with the signal's mean at radius ``r`` instead of the
    model's 2: a mismodelled estimator that shifts every dataset's mu_hat alike."""

    def __init__(self, model, radius):
        from hsbi.models.gaussian_rotation import GaussianRotation

        self.model, self.other, self.processes = model, GaussianRotation(radius=radius), model.processes

    def log_components(self, x, z):
        signal = self.other.log_components(x, z)[..., :1]
        return np.concatenate([signal, self.model.log_components(x, z)[..., 1:]], -1)


def test_pool_expectation_predicts_the_wilks_coverage_of_a_shared_shift():
    """Pooled datasets (1,000 at the default truth) fitted with the exact density and with a
    mismodelled one. The pools' expectation measures the shift they share: for the exact density
    only the pool's own fluctuation, whose standard deviation is sqrt(f) = 0.22 sigma with the pool
    share f = 1/20; for the mismodelled one a large shift, whose non-central chi2 prediction the
    measured Wilks coverage matches within 3 binomial errors while nominal is far off (and the
    Neyman coverage, calibrated on the same pools, stays near nominal)."""
    cfg = load_config("default", ["inference.coverage.datasets=1000", "inference.coverage.method=pool"])
    model = cfg.model.build()
    summary, _ = coverage_study(cfg, {"exact": model, "wrong": _Mismodelled(model, 1.6)}, model,
                                progress=lambda _: None)
    exact, wrong = summary["exact"]["pool_expectation"], summary["wrong"]["pool_expectation"]
    assert exact["pool_share"] == pytest.approx(0.05, rel=0.01) and not exact["at_edge"]
    assert abs(exact["shift_sigma"]) < 3 * np.sqrt(exact["pool_share"])
    low, high = exact["interval_68"]
    assert exact["mu_hat"] == pytest.approx(0.2, abs=3 * np.sqrt(exact["pool_share"]) * (high - low) / 2)
    # the datasets scatter as the expectation's curvature says (a sample std's error: 1/sqrt(2(N-1)))
    assert abs(exact["spread_ratio"] - 1) < 3 / np.sqrt(2 * 999)
    assert wrong["shift_sigma"] > 0.5
    for key, nominal in (("68", 0.6827), ("95", 0.95)):
        measured = summary["wrong"][key]["asymptotic"]
        predicted = wrong["wilks_predicted"][key]
        assert predicted < nominal - 5 * measured["error"], (key, predicted)
        assert abs(measured["value"] - predicted) < 3 * measured["error"], (key, measured, predicted)
        neyman = summary["wrong"][key]["neyman"]
        assert abs(neyman["value"] - nominal) < 3 * neyman["error"], (key, neyman)


def test_profiled_reference_as_the_pipeline_builds_it():
    """``inference.coverage.reference: profiled``: the Neyman critical value of a dataset comes
    from toys at (mu_true, its own conditional MLE of the nuisance), as NeymanToys throws them
    (interpolated between toys at nodes of the datasets' nuisance values). The simulator path's
    Neyman error counts the reference quantile: sqrt(p (1 - p) (1 / N + 1 / N_ref)); 300
    datasets cover within 3 such errors of nominal."""
    cfg = load_config("default", ["inference.coverage.datasets=300", "inference.coverage.width_datasets=0",
                                  "inference.coverage.reference=profiled"])
    model = cfg.model.build()
    summary, _ = coverage_study(cfg, {"exact": model}, model, progress=lambda _: None)
    exact = summary["exact"]
    assert summary["reference"] == "profiled" and exact["failed_fits"] == 0
    n_ref = exact["reference_toys_per_node"]
    assert len(exact["reference_nodes"]) >= 3 and n_ref == 300
    for key, nominal in (("68", 0.6827), ("95", 0.95)):
        neyman = exact[key]["neyman"]
        p = neyman["value"]
        assert neyman["error"] == pytest.approx(np.sqrt(p * (1 - p) * (1 / 300 + 1 / n_ref)), abs=1e-5)
        assert abs(p - nominal) < 3 * neyman["error"], (key, neyman)
