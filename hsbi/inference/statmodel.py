"""The declared statistical model as one likelihood object: parameters, yields, per-event shape
factors with code-4 interpolation, renormalisation and constraints (extended unbinned NLL).

Per channel and process ``c`` (``statistics.md``, HistFactory conventions):

    nu_c(theta)   = nu0_c * prod_f theta_f * prod_m I4(alpha_m; kappa_lo_cm, kappa_hi_cm) * lumi
    p_c(x | a)    = p0_c(x) * prod_m I4(alpha_m; r_cm^-(x), r_cm^+(x)) / N_c(alpha)
    NLL(theta)    = sum_ch [sum_c nu_c - sum_i w_i log sum_c nu_c p_c(x_i | alpha)]
                    + sum_m (alpha_m - a_m)^2 / 2 + (lumi - a_lumi)^2 / (2 sigma_lumi^2)

``p0_c`` enters through the learned log ratio ``log p0_c(x) / p_ref(x)`` (the reference cancels),
``r_cm^+-`` through the shape networks' log ratios, and ``N_c(alpha)`` is the mean of the shape
product over a fixed normalisation sample of nominal events of ``c`` (exact renormalisation of
the product: correlated shape effects of several NPs on one feature stay normalised). The cost
of one evaluation is linear in the number of NPs: ``n x C x S`` per dataset plus
``n_norm x C x S`` for the normalisation. Here the datasets are float64 torch, batched over
datasets (toys) with zero-weight padding, and :func:`nll` is the NLL as tensor expressions (the
reference); fits, scans, toys and coverage evaluate the same NLL with its analytic derivatives
through the fused kernels (:class:`hsbi.inference.nll.DeclaredLikelihood`, numpy). The model's
structure (:class:`StatModel`, :func:`compile_model`) lives in :mod:`hsbi.inference.model`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hsbi.inference.model import ChannelModel, Parameter, ParameterSpace, StatModel, compile_model
from hsbi.inference.nll import KernelLayout, events_layout, normalisation_layout
from hsbi.models.interpolation import code4_coefficients

__all__ = [
    "ChannelEvents",
    "ChannelModel",
    "Dataset",
    "Normalisation",
    "Parameter",
    "ParameterSpace",
    "StatModel",
    "code4_log_terms",
    "code4_shared_terms",
    "compile_model",
    "nll",
    "process_terms",
    "process_yields",
    "shape_log_norm",
    "signed_log_sum",
]

DTYPE = torch.float64


@dataclass(frozen=True)
class Normalisation(KernelLayout):
    """A fixed sample of nominal events per process: ``v`` (C, n) weights summing to 1 per
    process (0: padding; signed MC weights keep their sign), and the shape log ratios ``lo``,
    ``hi`` (C, n, S) there (0 where shape NP s does not act on process c: the fused kernels skip
    those entries)."""

    v: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    coef: torch.Tensor  # (C, n, S, 6)

    def _layout(self, own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        return normalisation_layout(*(t.numpy() for t in (self.v, self.lo, self.hi, self.coef)), own, counts)

    @staticmethod
    def offsets(weights: Sequence[np.ndarray], lo: Sequence[np.ndarray], hi: Sequence[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
        """Per process and shape NP, ``log mean r^-`` and ``log mean r^+`` over the sample (C, S).

        Subtracted from the normalisation sample's log ratios (not the data's), they make
        ``N_c = 1`` at alpha = +-1 for each NP alone, where a density ratio averages to 1 exactly:
        the sample then renormalises only what interpolation and the product add. Estimating that
        1 from the sample instead would tilt ``N_c(alpha)`` linearly in alpha by the sample mean's
        fluctuation, which the data's event count multiplies (with 20k events, 15% shape effects
        and 500 events of a process: ~0.6 NLL units per unit alpha, a 0.15 sigma shift of alpha)."""
        def log_mean(w: np.ndarray, a: np.ndarray) -> np.ndarray:
            v = (w / w.sum())[:, None]
            m = a.max(axis=0) if len(a) else 0.0
            return m + np.log((v * np.exp(a - m)).sum(axis=0))
        return (np.array([log_mean(w, a) for w, a in zip(weights, lo)]),
                np.array([log_mean(w, a) for w, a in zip(weights, hi)]))

    @classmethod
    def of(cls, weights: Sequence[np.ndarray], lo: Sequence[np.ndarray], hi: Sequence[np.ndarray]) -> Normalisation:
        """From per-process samples; ``lo``/``hi`` already self-normalised (see :meth:`offsets`)."""
        n = max(len(w) for w in weights)
        S = lo[0].shape[1] if lo[0].ndim == 2 else 0
        v, L, H = np.zeros((len(weights), n)), np.zeros((len(weights), n, S)), np.zeros((len(weights), n, S))
        for c, (w, l_, h) in enumerate(zip(weights, lo, hi)):
            v[c, : len(w)] = w / w.sum()
            L[c, : len(w)], H[c, : len(w)] = l_, h
        return cls(*(torch.as_tensor(a, dtype=DTYPE) for a in (v, L, H, code4_coefficients(L, H))))


@dataclass(frozen=True)
class ChannelEvents(KernelLayout):
    """Per-event terms of datasets in one channel, computed once and stored: ``w`` (B, n) event
    weights (0: padding), ``logp`` (B, n, C) nominal log ratios, ``lo``/``hi`` (B, n, C, S) shape
    log ratios ``log r^-``, ``log r^+`` (0 where shape NP s does not act on process c: the fused
    kernels skip those entries) and their code-4 coefficients ``coef`` (B, n, C, S, 6)."""

    w: torch.Tensor
    logp: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    coef: torch.Tensor

    @classmethod
    def of(cls, w: np.ndarray, logp: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> ChannelEvents:
        """From arrays with a leading batch axis (add one for a single dataset)."""
        return cls(*(torch.as_tensor(a, dtype=DTYPE) for a in (w, logp, lo, hi, code4_coefficients(lo, hi))))

    @property
    def batch(self) -> int:
        return self.w.shape[0]

    def take(self, rows: torch.Tensor) -> ChannelEvents:
        return ChannelEvents(*(t[rows] for t in (self.w, self.logp, self.lo, self.hi, self.coef)))

    def _layout(self, own: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        return events_layout(*(t.numpy() for t in (self.w, self.logp, self.lo, self.hi, self.coef)), own, counts)


@dataclass(frozen=True)
class Dataset:
    """Datasets (a batch of B): per-channel events and the global observables ``aux`` (B, P)."""

    channels: tuple[ChannelEvents, ...]
    aux: torch.Tensor

    @property
    def batch(self) -> int:
        return self.aux.shape[0]

    def take(self, rows: torch.Tensor) -> Dataset:
        return Dataset(tuple(ch.take(rows) for ch in self.channels), self.aux[rows])


def _code4_log(theta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``log I4(theta)`` elementwise; ``theta`` broadcasts against ``lo``/``hi`` (``coef``: one
    more trailing axis of 6)."""
    a = theta.clamp(-1.0, 1.0)
    poly = 1.0 + a * (coef[..., 0] + a * (coef[..., 1] + a * (coef[..., 2] + a * (
        coef[..., 3] + a * (coef[..., 4] + a * coef[..., 5])))))
    inside = theta.abs() < 1.0
    outer = torch.where(theta >= 0, theta * hi, -theta * lo)
    return torch.where(inside, torch.log(torch.where(inside, poly.clamp_min(1e-300), 1.0)), outer)


def code4_log_terms(theta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log I4`` and its first and second derivatives in ``theta`` (broadcast as in
    :func:`_code4_log`): linear outside |theta| < 1, the log of the polynomial inside."""
    a = theta.clamp(-1.0, 1.0)
    c1, c2, c3, c4, c5, c6 = coef.unbind(-1)
    poly = 1.0 + a * (c1 + a * (c2 + a * (c3 + a * (c4 + a * (c5 + a * c6)))))
    d1 = c1 + a * (2 * c2 + a * (3 * c3 + a * (4 * c4 + a * (5 * c5 + a * 6 * c6))))
    d2 = 2 * c2 + a * (6 * c3 + a * (12 * c4 + a * (20 * c5 + a * 30 * c6)))
    inside = theta.abs() < 1.0
    p = torch.where(inside, poly.clamp_min(1e-300), 1.0)
    slope = torch.where(theta >= 0, hi, -lo)
    return (torch.where(inside, torch.log(p), theta * slope), torch.where(inside, d1 / p, slope),
            torch.where(inside, d2 / p - (d1 / p) ** 2, 0.0))


def code4_shared_terms(alpha: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor,
                       derivatives: bool = True) -> tuple[torch.Tensor, ...]:
    """:func:`code4_log_terms` for one ``alpha`` (B, S) per dataset shared by all ``n`` events of
    a fixed sample (``lo``, ``hi`` (C, n, S), ``coef`` (C, n, S, 6)): (B, C, n, S) each.

    Inside |alpha| < 1 the polynomial and its derivatives are the coefficients times the powers
    of alpha, three matrix products over the 6 powers instead of Horner's scheme elementwise
    (the normalisation sample is the largest tensor of a fit: 4x fewer passes over it)."""
    k = torch.arange(1, 7, dtype=DTYPE)
    a = alpha.clamp(-1.0, 1.0)[..., None]  # (B, S, 1)
    powers = [a**k]
    if derivatives:
        powers += [k * a ** (k - 1), k * (k - 1) * a.abs().clamp_min(1e-300) ** (k - 2) * torch.where(
            (k % 2 == 0) | (a >= 0), 1.0, -1.0)]
    inside = (alpha.abs() < 1.0)[:, None, None, :]  # (B, 1, 1, S)
    x = alpha[:, None, None, :]
    poly, *ds = (torch.einsum("cnsk,bsk->bcns", coef, pw) for pw in powers)
    p = torch.where(inside, 1.0 + poly, 1.0).clamp_min(1e-300)
    slope = torch.where(x >= 0, hi, -lo)
    L = torch.where(inside, torch.log(p), x * slope)
    if not derivatives:
        return (L,)
    d1 = ds[0] / p
    return L, torch.where(inside, d1, slope), torch.where(inside, ds[1] / p - d1 * d1, 0.0)


def process_yields(ch: ChannelModel, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, log G)`` of shape (B, C): normfactor products and the log of everything else."""
    nf, lo, hi, coef, log_nu0, lumi = ch.constants
    F = torch.prod(torch.where(nf, theta[:, None, :], torch.ones((), dtype=DTYPE)), dim=-1)
    logG = _code4_log(theta[:, None, :], lo, hi, coef).sum(-1) + log_nu0
    if (lumi >= 0).any():
        lam = theta[:, lumi.clamp_min(0)]
        logG = logG + torch.where(lumi >= 0, torch.log(lam.clamp_min(1e-300)), torch.zeros((), dtype=DTYPE))
    return F, logG


def _shapes(ch: ChannelModel, theta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
            coef: torch.Tensor) -> torch.Tensor:
    """``sum_s log I4(alpha_s; r^-, r^+)`` over the channel's shape NPs for events with log
    ratios ``lo``/``hi`` of shape (B, n, C, S) (or (C, n, S)): (B, n, C) (or (B, C, n))."""
    a = theta[:, ch.shape_index][:, None, None, :]  # (B, 1, 1, S)
    return _code4_log(a, lo, hi, coef).sum(-1)


def signed_log_sum(logs: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log sum_i v_i exp(logs_i)`` over the last axis for signed weights ``v`` (0: padding) and
    the normalised weights ``pi_i = v_i exp(logs_i) / sum`` (signed where ``v`` is): the
    normalisation sample's sums, valid while the sum is positive (NaN otherwise)."""
    m = torch.where(v != 0, logs, -math.inf).amax(-1, keepdim=True).clamp_min(-1e300)
    e = v * torch.exp(torch.where(v != 0, logs - m, -math.inf))
    z = e.sum(-1, keepdim=True)
    return (m + torch.log(z)).squeeze(-1), e / z


def shape_log_norm(ch: ChannelModel, norm: Normalisation, theta: torch.Tensor) -> torch.Tensor:
    """``log N_c(alpha)`` (B, C): the log mean shape product over the normalisation sample."""
    if len(ch.shape_index) == 0:
        return torch.zeros(theta.shape[0], len(ch.processes), dtype=DTYPE)
    (L,) = code4_shared_terms(theta[:, ch.shape_index], norm.lo, norm.hi, norm.coef, derivatives=False)
    return signed_log_sum(L.sum(-1), norm.v)[0]  # (B, C)


def process_terms(ch: ChannelModel, events: ChannelEvents, theta: torch.Tensor,
                  log_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, q)``: normfactor products (B, C) and per event and process
    ``q_ic = log(nu_c p_c(x_i) / F_c)`` (B, n, C), so that ``lambda_i = sum_c F_c exp(q_ic)``."""
    F, logG = process_yields(ch, theta)
    shape = _shapes(ch, theta, events.lo, events.hi, events.coef) if len(ch.shape_index) else 0.0
    return F, events.logp + shape + (logG - log_norm)[:, None, :]


def channel_nll(ch: ChannelModel, events: ChannelEvents, theta: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
    """One channel's ``sum_c nu_c - sum_i w_i log sum_c nu_c p_c(x_i)`` for a batch (B,)."""
    F, logG = process_yields(ch, theta)
    _, q = process_terms(ch, events, theta, log_norm)
    m = q.max(dim=-1, keepdim=True).values
    lam = (F[:, None, :] * torch.exp(q - m)).sum(-1)
    log_lam = m.squeeze(-1) + torch.log(lam)
    log_lam = torch.where(events.w != 0, log_lam, torch.zeros((), dtype=DTYPE))
    return (F * torch.exp(logG)).sum(-1) - (events.w * log_lam).sum(-1)


def constraint_nll(model: StatModel, theta: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    sig = torch.as_tensor(np.nan_to_num(model.sigmas, nan=np.inf), dtype=DTYPE)
    terms = torch.where(torch.isfinite(sig), (theta - aux.nan_to_num(0.0)) ** 2 / (2 * sig**2), 0.0)
    return terms.sum(-1)


def nll(model: StatModel, norms: Sequence[Normalisation], data: Dataset, theta: torch.Tensor) -> torch.Tensor:
    """The NLL of each dataset of ``data`` at its row of ``theta`` (B, P): shape (B,)."""
    total = constraint_nll(model, theta, data.aux)
    for ch, norm, events in zip(model.channels, norms, data.channels):
        total = total + channel_nll(ch, events, theta, shape_log_norm(ch, norm, theta))
    return total
