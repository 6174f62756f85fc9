"""Inference: extended profile likelihood, asymptotic intervals and Neyman construction."""

from hsbi.inference.likelihood import Likelihood, ProfiledGrid, parabola_min
from hsbi.inference.profile import (
    Interval,
    ObservedFit,
    asymptotic_interval,
    check_point,
    critical_values,
    fit_observed,
    likelihood_from_config,
    make_likelihood,
    neyman_interval,
    throw_toys,
    toy_statistics,
)

__all__ = [
    "Interval",
    "Likelihood",
    "ObservedFit",
    "ProfiledGrid",
    "asymptotic_interval",
    "check_point",
    "critical_values",
    "fit_observed",
    "likelihood_from_config",
    "make_likelihood",
    "neyman_interval",
    "parabola_min",
    "throw_toys",
    "toy_statistics",
]
