"""Diagnostics of trained estimators: closure of reweighted samples per feature, calibration."""

from hsbi.diagnostics.calibration import expected_calibration_error, plot_reliability, reliability_curve
from hsbi.diagnostics.closure import closure_chi2, plot_closure

__all__ = ["closure_chi2", "expected_calibration_error", "plot_closure", "plot_reliability", "reliability_curve"]
