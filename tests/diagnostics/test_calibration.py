"""Reliability curves and ECE: a calibrated classifier is within its binomial errors, a
miscalibrated one is not; the PNG is written."""

import numpy as np

from hsbi.diagnostics import expected_calibration_error, plot_reliability, reliability_curve

BINS = 10


def _calibrated(seed: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Predictions ``p ~ U(0, 1)`` and labels ``y ~ Bernoulli(p)``: perfectly calibrated."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return p, (rng.uniform(size=n) < p).astype(float)


def test_calibrated_classifier_has_ece_within_its_statistical_error():
    p, y = _calibrated(0)
    ece = expected_calibration_error(p, y, BINS)
    assert abs(ece["ece"] - ece["ece_null"]) < 4 * ece["ece_null_sd"], ece
    curve = reliability_curve(p, y, BINS)
    pulls = (np.array(curve["observed"]) - np.array(curve["predicted"])) / np.array(curve["error"])
    assert len(pulls) == BINS and np.sum(pulls**2) < BINS + 4 * np.sqrt(2 * BINS)  # chi2(BINS)


def test_miscalibrated_classifier_is_detected():
    p, y = _calibrated(1)
    ece = expected_calibration_error(p**2, y, BINS)  # under-confident towards 0
    assert ece["ece"] > ece["ece_null"] + 10 * ece["ece_null_sd"], ece


def test_reliability_plot_is_written(tmp_path):
    p, y = _calibrated(2, 2000)
    curves = {"signal": {"ensemble": reliability_curve(p, y), "member 0": reliability_curve(p**1.2, y)}}
    plot_reliability(tmp_path / "calibration.png", curves)
    assert (tmp_path / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
