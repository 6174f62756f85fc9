"""Plots (PNG) of inference results; pure functions of arrays, no workflow imports."""

from hsbi.plotting.inference import plot_profile_and_belt, plot_test_statistic

__all__ = ["plot_profile_and_belt", "plot_test_statistic"]
