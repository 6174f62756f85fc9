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
