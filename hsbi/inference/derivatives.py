"""Analytic gradient and Hessian of the declared model's NLL (:func:`hsbi.inference.statmodel.nll`),
batched over datasets, without autograd.

Per channel, with ``q_ic = log p0_c(x_i) + sum_s log I4(alpha_s) + log G_c - log N_c`` and the
normfactor product ``F_c``, ``lambda_i = sum_c F_c exp(q_ic)``. With ``D_ic = dq_ic / dtheta``,
``Q_c = dF_c / dtheta``, ``R_ic = exp(q_ic) / lambda_i`` and ``T_ic = F_c R_ic``:

    grad log lambda_i        = sum_c (R_ic Q_c + T_ic D_ic)
    hess lambda_i / lambda_i = sum_c R_ic (F''_c + Q_c D_ic^T + D_ic Q_c^T) + T_ic (D_ic D_ic^T + E_ic)

with ``E_ic`` the second derivatives of ``q_ic``: diagonal in theta, except the normalisation's
``-d^2 log N_c``, a covariance over the normalisation sample (:func:`_norm_terms`), exact per
dataset.

The sums over events and over the normalisation sample run in fused loops
(:mod:`hsbi.inference.kernels`, with the yields' factors and the assembly below) that return
sufficient statistics; with ``D_ic = a_c + e_ic``
(``a_c = dG_c - J_c`` the same for all events, ``e_ic`` the event's shape derivatives over the
process's own NPs) and ``g_i = M u_i + E_i`` (``M = [Q_c, a_c]``, ``u_i = (R_i, T_i)``,
``E_i = sum_c T_ic e_ic``) every event-level outer product above reduces to sums of size
``(2C + S)^2``. Cost per dataset: ``n x (2C + S)^2`` (events) plus ``n_norm x sum_c S_c^2``
(normalisation) for the Hessian, ``(n + n_norm) x sum_c S_c`` for value and gradient. The tensor
expressions (``reference=True``) stay as the cross-check the tests compare with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hsbi.inference.statmodel import (
    DTYPE,
    ChannelEvents,
    ChannelModel,
    Dataset,
    Normalisation,
    StatModel,
    code4_log_terms,
    code4_shared_terms,
    signed_log_sum,
)

__all__ = ["nll_grad", "nll_grad_hess"]


def _norm_terms(ch: ChannelModel, norm: Normalisation, theta: torch.Tensor, P: int, hessian: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``log N_c`` (B, C), its gradient (B, C, P) and, with ``hessian``, its second derivatives
    (B, C, P, P) over the normalisation sample: with ``pi`` the sample's weights times the shape
    product (normalised), ``d log N = E_pi[dL]`` and
    ``d^2 log N = Cov_pi(dL, dL) + diag E_pi[d^2 L]`` (exact, per dataset)."""
    B, C = theta.shape[0], len(ch.processes)
    if len(ch.shape_index) == 0:
        zero = torch.zeros(B, C, P, P, dtype=DTYPE) if hessian else None
        return torch.zeros(B, C, dtype=DTYPE), torch.zeros(B, C, P, dtype=DTYPE), zero
    L, dL, d2L = code4_shared_terms(theta[:, ch.shape_index], norm.lo, norm.hi, norm.coef)  # (B, C, n, S)
    log_norm, pi = signed_log_sum(L.sum(-1), norm.v)  # (B, C), (B, C, n): signed where v is
    mean = torch.einsum("bcn,bcns->bcs", pi, dL)
    J = torch.zeros(B, C, P, dtype=DTYPE)
    J[:, :, ch.shape_index] = mean
    if not hessian:
        return log_norm, J, None
    S = len(ch.shape_index)
    flat = dL.reshape(B * C, -1, S)
    second = torch.bmm(flat.transpose(1, 2), pi.reshape(B * C, -1, 1) * flat).reshape(B, C, S, S)
    second = second - mean[..., :, None] * mean[..., None, :]
    second = second + torch.diag_embed(torch.einsum("bcn,bcns->bcs", pi, d2L))
    K = torch.zeros(B, C, P, P, dtype=DTYPE)
    idx = torch.as_tensor(ch.shape_index)
    K[:, :, idx[:, None], idx[None, :]] = second
    return log_norm, J, K


def _yield_terms(ch: ChannelModel, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``F`` (B, C), ``Q = dF`` (B, C, P), ``F''`` (B, C, P, P), ``log G`` (B, C) and its first
    and (diagonal) second derivatives (B, C, P)."""
    nf, lo, hi, coef, log_nu0, lumi = ch.constants
    B, P = theta.shape
    one = torch.ones((), dtype=DTYPE)
    F = torch.prod(torch.where(nf, theta[:, None, :], one), dim=-1)
    Q = torch.zeros(B, len(ch.processes), P, dtype=DTYPE)
    F2 = torch.zeros(B, len(ch.processes), P, P, dtype=DTYPE)
    for f in torch.nonzero(nf.any(0)).squeeze(1).tolist():
        others = nf.clone()
        others[:, f] = False
        Q[:, :, f] = torch.where(nf[:, f], torch.prod(torch.where(others, theta[:, None, :], one), -1), 0.0)
        for g in torch.nonzero(others.any(0)).squeeze(1).tolist():
            both = others.clone()
            both[:, g] = False
            F2[:, :, f, g] = torch.where(nf[:, f] & nf[:, g], torch.prod(torch.where(both, theta[:, None, :], one), -1), 0.0)
    Y, dY, d2Y = code4_log_terms(theta[:, None, :], lo, hi, coef)  # (B, C, P)
    logG, dG, d2G = Y.sum(-1) + log_nu0, dY.clone(), d2Y.clone()
    for c, j in enumerate(lumi.tolist()):
        if j >= 0:
            lam = theta[:, j].clamp_min(1e-300)
            logG[:, c] = logG[:, c] + torch.log(lam)
            dG[:, c, j] += 1 / lam
            d2G[:, c, j] -= 1 / lam**2
    return F, Q, F2, logG, dG, d2G


def _channel_reference(ch: ChannelModel, norm: Normalisation, events: ChannelEvents, theta: torch.Tensor,
                       hessian: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The channel's value, gradient and Hessian as tensor expressions (the cross-check)."""
    B, P = theta.shape
    F, Q, F2, logG, dG, d2G = _yield_terms(ch, theta)
    log_norm, J, K = _norm_terms(ch, norm, theta, P, hessian)
    D = (dG - J)[:, None, :, :].expand(B, events.w.shape[1], -1, -1).clone()  # (B, n, C, P)
    q = events.logp + (logG - log_norm)[:, None, :]
    if len(ch.shape_index):
        a = theta[:, ch.shape_index][:, None, None, :]
        L, dL, d2L = code4_log_terms(a, events.lo, events.hi, events.coef)  # (B, n, C, S)
        q = q + L.sum(-1)
        D[..., ch.shape_index] += dL
    m = q.max(-1, keepdim=True).values
    u = torch.exp(q - m)
    lam = (F[:, None, :] * u).sum(-1)  # (B, n), scaled by exp(-m)
    R, w = u / lam[..., None], events.w
    T = F[:, None, :] * R
    value_events = -(w * torch.where(w != 0, m.squeeze(-1) + torch.log(lam), 0.0)).sum(-1)
    Y = F * torch.exp(logG)
    value = Y.sum(-1) + value_events
    g_i = torch.einsum("bnc,bcp->bnp", R, Q) + torch.einsum("bnc,bncp->bnp", T, D)
    grad = (Y[..., None] * dG + torch.exp(logG)[..., None] * Q).sum(1) - torch.einsum("bn,bnp->bp", w, g_i)
    if not hessian:
        return value, grad, None
    wR, wT = w[..., None] * R, w[..., None] * T  # (B, n, C)
    H = _yield_hessian(torch.exp(logG), Y, Q, F2, dG, d2G)
    cross = torch.einsum("bcp,bcq->bpq", Q, torch.einsum("bnc,bncq->bcq", wR, D))
    H = H - torch.einsum("bc,bcpq->bpq", wR.sum(1), F2) - cross - cross.transpose(1, 2)
    flat = D.reshape(B, -1, P)  # (B, n C, P): the outer products as two batched matmuls
    H = H - torch.bmm(flat.transpose(1, 2), wT.reshape(B, -1, 1) * flat)
    H = H + torch.bmm(g_i.transpose(1, 2), w[..., None] * g_i)
    E = d2G[:, None].expand_as(D).clone()
    if len(ch.shape_index):
        E[..., ch.shape_index] += d2L
    H = H - torch.diag_embed(torch.einsum("bnc,bncp->bp", wT, E))
    H = H + torch.einsum("bc,bcpq->bpq", wT.sum(1), K)  # d^2 log N_c enters q_ic with a minus sign
    return value, grad, H


def _yield_hessian(G: torch.Tensor, Y: torch.Tensor, Q: torch.Tensor, F2: torch.Tensor, dG: torch.Tensor,
                   d2G: torch.Tensor) -> torch.Tensor:
    """The Hessian of ``sum_c nu_c`` (B, P, P)."""
    H = torch.einsum("bc,bcpq->bpq", G, F2) + torch.einsum("bc,bcp,bcq->bpq", G, Q, dG)
    H = H + H.transpose(1, 2) - torch.einsum("bc,bcpq->bpq", G, F2)  # F2 counted once
    return H + torch.einsum("bc,bcp,bcq->bpq", Y, dG, dG) + torch.diag_embed((Y[..., None] * d2G).sum(1))


def _constraint(model: StatModel, theta: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, ...]:
    sig = torch.as_tensor(model.sigmas, dtype=DTYPE).nan_to_num(torch.inf)
    inv = torch.where(torch.isfinite(sig), 1 / sig**2, 0.0)
    diff = theta - aux.nan_to_num(0.0)
    return (0.5 * inv * diff**2).sum(-1), inv * diff, torch.diag_embed(inv.expand_as(theta))


def _rows(data: Dataset, rows: np.ndarray | torch.Tensor | None) -> np.ndarray:
    return np.arange(data.batch, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)


def nll_grad(model: StatModel, norms: Sequence[Normalisation], data: Dataset, theta: torch.Tensor,
             rows: np.ndarray | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The NLL (B,) and its gradient (B, P) of datasets ``rows`` of ``data`` (all by default),
    one per row of ``theta``."""
    return _evaluate(model, norms, data, theta, rows, False, False)[:2]


def nll_grad_hess(model: StatModel, norms: Sequence[Normalisation], data: Dataset, theta: torch.Tensor,
                  rows: np.ndarray | torch.Tensor | None = None, reference: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NLL (B,), gradient (B, P) and exact Hessian (B, P, P) of datasets ``rows`` of
    ``data``; ``reference`` evaluates the tensor expressions instead of the fused kernels."""
    return _evaluate(model, norms, data, theta, rows, True, reference)


def _evaluate(model: StatModel, norms: Sequence[Normalisation], data: Dataset, theta: torch.Tensor,
              rows: np.ndarray | torch.Tensor | None, hessian: bool, reference: bool) -> tuple[torch.Tensor, ...]:
    rows = _rows(data, rows)
    if not reference:  # the fused kernels (:func:`hsbi.inference.nll.evaluate`, numpy)
        from hsbi.inference.nll import evaluate

        out = evaluate(model, norms, data, np.asarray(theta.detach(), dtype=np.float64), rows, hessian)
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) if a is not None else None for a in out)
    theta = theta.detach().to(DTYPE).contiguous()
    value, grad, hess = _constraint(model, theta, data.aux[torch.from_numpy(rows)])
    for ch, norm, events in zip(model.channels, norms, data.channels):
        v, g, h = _channel_reference(ch, norm, events.take(torch.from_numpy(rows)), theta, hessian)
        value, grad = value + v, grad + g
        if hessian:
            hess = hess + h
    return value, grad, hess
