"""HistFactory interpolation code 4: a degree-6 polynomial inside |alpha| < 1, exponential outside.

For a factor with values ``kappa_lo`` at ``alpha = -1`` and ``kappa_hi`` at ``alpha = +1``:

    I(alpha) = kappa_hi ** alpha                   alpha >= 1
    I(alpha) = 1 + sum_{i=1..6} a_i alpha^i        |alpha| < 1
    I(alpha) = kappa_lo ** (-alpha)                alpha <= -1

with the ``a_i`` fixed by the value, first and second derivative of the exponentials at
``alpha = +-1`` (pyhf's ``normsys`` code 4, ``pyhf.interpolators.code4`` with ``alpha0 = 1``,
is the reference; ``tests/models/test_interpolation.py`` compares to it). The same function
interpolates yields (``normsys``, the yield part of ``normplusshape``) and, per event, the shape
ratios ``p_c(x | alpha = +-1) / p_c(x | 0)`` (the IRIS-HEP NSBI toolkit does the same).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CODE4_INVERSE", "code4", "code4_coefficients", "code4_log_derivatives"]

#: ``A^-1`` of pyhf's code 4 at ``alpha0 = 1``: maps ``b`` (see :func:`code4_coefficients`) to
#: the polynomial coefficients ``a_1 .. a_6``.
CODE4_INVERSE = np.array([
    [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
    [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
    [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
    [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
    [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
    [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
])


def code4_coefficients(log_lo: np.ndarray, log_hi: np.ndarray) -> np.ndarray:
    """Polynomial coefficients ``a_1 .. a_6`` of shape ``(*, 6)`` from ``log kappa_lo`` and
    ``log kappa_hi`` (each ``(*)``; logs, so per-event log ratios go in without exponentiating
    twice)."""
    lo, hi = np.asarray(log_lo, dtype=float), np.asarray(log_hi, dtype=float)
    k_lo, k_hi = np.exp(lo), np.exp(hi)
    b = np.stack([k_hi - 1, k_lo - 1, hi * k_hi, -lo * k_lo, hi**2 * k_hi, lo**2 * k_lo], axis=-1)
    return b @ CODE4_INVERSE.T


def code4(alpha: np.ndarray, kappa_lo: np.ndarray, kappa_hi: np.ndarray) -> np.ndarray:
    """The interpolated factor ``I(alpha)`` (all arguments broadcast; ``kappa > 0``)."""
    alpha = np.asarray(alpha, dtype=float)
    log_lo, log_hi = np.log(kappa_lo), np.log(kappa_hi)
    coef = code4_coefficients(log_lo, log_hi)
    a = np.clip(alpha, -1.0, 1.0)
    powers = np.stack([a**i for i in range(1, 7)], axis=-1)
    inner = 1.0 + np.sum(coef * powers, axis=-1)
    outer = np.exp(np.where(alpha >= 0, alpha * log_hi, -alpha * log_lo))
    return np.where(np.abs(alpha) < 1.0, inner, outer)


def code4_log_derivatives(
    alpha: np.ndarray, log_lo: np.ndarray, log_hi: np.ndarray, coef: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log I``, ``d log I / d alpha`` and ``d^2 log I / d alpha^2`` (each broadcast shape).

    Outside ``|alpha| < 1`` the log is linear in alpha (second derivative 0); inside it is the
    log of the polynomial. ``coef`` (``(*, 6)``) may be given when precomputed."""
    alpha = np.asarray(alpha, dtype=float)
    coef = code4_coefficients(log_lo, log_hi) if coef is None else coef
    a = np.clip(alpha, -1.0, 1.0)[..., None]
    i = np.arange(1, 7)
    p = 1.0 + np.sum(coef * a**i, axis=-1)
    dp = np.sum(coef * i * a ** (i - 1), axis=-1)
    d2p = np.sum(coef * i * (i - 1) * a ** np.maximum(i - 2, 0), axis=-1)
    inside = np.abs(alpha) < 1.0
    p_safe = np.where(inside, np.maximum(p, 1e-300), 1.0)
    log_in, d1_in = np.log(p_safe), dp / p_safe
    d2_in = d2p / p_safe - d1_in**2
    slope = np.where(alpha >= 0, log_hi, -log_lo)
    return (np.where(inside, log_in, alpha * slope), np.where(inside, d1_in, slope),
            np.where(inside, d2_in, 0.0))
