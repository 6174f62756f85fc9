"""Batched fits of many datasets (toys) of the declared model: projected Newton in torch with
``P x P`` Hessians per dataset.

Each iteration evaluates the NLL of all datasets, its gradient and its Hessian. The shape
normalisation ``log N_c(alpha)`` enters as its own variable: its value and gradient are exact
at every iteration, its curvature ``d^2 log N_c / d alpha^2`` is taken once at the start point
(shared by the batch: toys start where they were thrown); the minimum is that of the exact NLL
(the gradient is exact), only the convergence rate depends on the curvature used. Parameters on
a bound with the gradient pushing outwards are held; a step that raises the NLL is halved.
A fit that does not reach the tolerance within the iteration limit is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hsbi.inference.fitting import Likelihood
from hsbi.inference.statmodel import DTYPE, Dataset, channel_nll, constraint_nll, shape_log_norm

__all__ = ["BatchFit", "fit_batch"]

#: Newton decrement (g^T H^-1 g / 2) at which a fit stops
_TOL = 1e-7


@dataclass(frozen=True)
class BatchFit:
    theta: np.ndarray  # (B, P)
    nll: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    iterations: int


def _log_norms(lik: Likelihood, theta: torch.Tensor) -> list[torch.Tensor]:
    return [shape_log_norm(ch, norm, theta) for ch, norm in zip(lik.model.channels, lik.norms)]


def _norm_curvature(lik: Likelihood, theta0: torch.Tensor) -> list[torch.Tensor]:
    """``d^2 log N_c / d theta^2`` per channel at one point: (C, P, P)."""
    out = []
    for ch, norm in zip(lik.model.channels, lik.norms):
        def f(t: torch.Tensor, ch=ch, norm=norm) -> torch.Tensor:
            return shape_log_norm(ch, norm, t[None])[0]
        out.append(torch.autograd.functional.jacobian(lambda t: torch.autograd.functional.jacobian(f, t, create_graph=True), theta0))
    return out


def _events_nll(lik: Likelihood, data: Dataset, theta: torch.Tensor, lams: list[torch.Tensor]) -> torch.Tensor:
    total = constraint_nll(lik.model, theta, data.aux)
    for ch, events, lam in zip(lik.model.channels, data.channels, lams):
        total = total + channel_nll(ch, events, theta, lam)
    return total


def _value_grad_hess(lik: Likelihood, data: Dataset, theta: torch.Tensor, curv: list[torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, P = theta.shape
    th = theta.detach().requires_grad_(True)
    lam_th = _log_norms(lik, th)
    # Jacobians of log N_c: (B, C, P) per channel (rows independent: one backward per process)
    jac = []
    for lam in lam_th:
        rows = [torch.autograd.grad(lam[:, c].sum(), th, retain_graph=True)[0] for c in range(lam.shape[1])]
        jac.append(torch.stack(rows, dim=1))
    lams = [lam.detach().requires_grad_(True) for lam in lam_th]
    t2 = theta.detach().requires_grad_(True)
    f = _events_nll(lik, data, t2, lams)
    leaves = [t2, *lams]
    grads = torch.autograd.grad(f.sum(), leaves, create_graph=True)
    flat = torch.cat(grads, dim=1)  # (B, P + sum C)
    K = flat.shape[1]
    hess = torch.stack([torch.cat(torch.autograd.grad(flat[:, k].sum(), leaves, retain_graph=k < K - 1), dim=1)
                        for k in range(K)], dim=1)  # (B, K, K)
    J = torch.cat([torch.eye(P, dtype=DTYPE).expand(B, P, P), *jac], dim=1)  # (B, K, P)
    grad = torch.einsum("bk,bkp->bp", flat.detach(), J)
    H = torch.einsum("bkp,bkl,blq->bpq", J, hess.detach(), J)
    for g_lam, c2 in zip(grads[1:], curv):
        H = H + torch.einsum("bc,cpq->bpq", g_lam.detach(), c2)
    return f.detach(), grad, H


def fit_batch(lik: Likelihood, data: Dataset, start: np.ndarray, fixed: np.ndarray | None = None,
              max_iter: int = 40) -> BatchFit:
    """Minimise every dataset's NLL from ``start`` (B, P); ``fixed`` (P,) bool holds those
    parameters at their start values (the POI for conditional fits, fixed parameters)."""
    model = lik.model
    theta = torch.as_tensor(np.asarray(start, dtype=float), dtype=DTYPE).clone()
    B, P = theta.shape
    hold = np.array([p.fixed for p in model.parameters]) | (np.zeros(P, bool) if fixed is None else fixed)
    free = torch.as_tensor(~hold)
    lo, hi = (torch.as_tensor(model.bounds[:, k], dtype=DTYPE) for k in (0, 1))
    curv = _norm_curvature(lik, theta[0])
    done = torch.zeros(B, dtype=torch.bool)
    f, g, H = _value_grad_hess(lik, data, theta, curv)
    it = 0
    for it in range(1, max_iter + 1):
        active = free[None, :] & ~(((theta <= lo) & (g > 0)) | ((theta >= hi) & (g < 0)))
        Ha = torch.where(active[:, :, None] & active[:, None, :], H, torch.eye(P, dtype=DTYPE) * 1.0)
        ga = torch.where(active, g, 0.0)
        evals, evecs = torch.linalg.eigh(Ha)
        evals = evals.abs().clamp_min(1e-8 * evals.abs().amax(-1, keepdim=True).clamp_min(1e-300))
        step = -torch.einsum("bpk,bk,bqk,bq->bp", evecs, 1.0 / evals, evecs, ga)
        decrement = -(step * ga).sum(-1) / 2
        done = done | (decrement < _TOL)
        if bool(done.all()):
            break
        scale = torch.ones(B, dtype=DTYPE)
        for _ in range(12):  # halve the steps whose NLL rose
            trial = torch.where(done[:, None], theta, torch.clamp(theta + scale[:, None] * step, lo, hi))
            with torch.no_grad():
                f_trial = lik.batch(data, trial)
            worse = (f_trial > f + 1e-10) & ~done
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale / 2, scale)
        theta = torch.where(worse[:, None], theta, trial)
        f, g, H = _value_grad_hess(lik, data, theta, curv)
    return BatchFit(theta.numpy(), f.numpy(), done.numpy(), it)
