"""Plots (PNG) of inference results; pure functions of arrays, no workflow imports."""

from hsbi.plotting.inference import plot_profile_and_belt

__all__ = ["plot_profile_and_belt"]
