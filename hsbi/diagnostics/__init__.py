"""Diagnostics of trained estimators: closure of reweighted samples, per feature."""

from hsbi.diagnostics.closure import closure_chi2, plot_closure

__all__ = ["closure_chi2", "plot_closure"]
