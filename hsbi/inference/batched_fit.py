"""Batched fits of many datasets (toys) of the declared model: projected Newton in torch with
``P x P`` Hessians per dataset.

Each iteration evaluates the NLL of the datasets still being fitted, its analytic gradient and
Hessian (:mod:`hsbi.inference.derivatives`). The shape
normalisation ``log N_c(alpha)`` enters as its own variable: its value and gradient are exact
at every iteration, its curvature ``d^2 log N_c / d alpha^2`` is taken once at the start point
(shared by the batch: toys start where they were thrown); the minimum is that of the exact NLL
(the gradient is exact), only the convergence rate depends on the curvature used. Parameters on
a bound with the gradient pushing outwards are held; a step that raises the NLL is halved.
A fit that does not reach the tolerance within the iteration limit is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from hsbi.inference.derivatives import nll_grad_hess, norm_curvature
from hsbi.inference.statmodel import DTYPE, Dataset

if TYPE_CHECKING:  # fitting uses this module: no import at run time
    from hsbi.inference.fitting import Likelihood

__all__ = ["BatchFit", "fit_batch"]

#: Newton decrement (g^T H^-1 g / 2) at which a fit stops
_TOL = 1e-7


@dataclass(frozen=True)
class BatchFit:
    theta: np.ndarray  # (B, P)
    nll: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    iterations: int


def fit_batch(lik: Likelihood, data: Dataset, start: np.ndarray, fixed: np.ndarray | None = None,
              max_iter: int = 40) -> BatchFit:
    """Minimise every dataset's NLL from ``start`` (B, P); ``fixed`` (P,) or (B, P) bool holds
    those parameters at their start values (the POI for conditional fits, an NP for impacts)."""
    model = lik.model
    theta = torch.as_tensor(np.asarray(start, dtype=float), dtype=DTYPE).clone()
    B, P = theta.shape
    hold = np.array([p.fixed for p in model.parameters]) | (np.zeros(P, bool) if fixed is None else fixed)
    free = torch.as_tensor(np.broadcast_to(~hold, (B, P)).copy())
    lo, hi = (torch.as_tensor(model.bounds[:, k], dtype=DTYPE) for k in (0, 1))
    curv = norm_curvature(lik.model, lik.norms, theta[0])
    done = torch.zeros(B, dtype=torch.bool)
    f = torch.zeros(B, dtype=DTYPE)
    it = 0
    for it in range(1, max_iter + 1):
        rows = torch.nonzero(~done).squeeze(1)  # only the datasets still being fitted
        sub, th = data.take(rows), theta[rows]
        f_sub, g, H = nll_grad_hess(lik.model, lik.norms, sub, th, curv)
        f[rows] = f_sub
        active = free[rows] & ~(((th <= lo) & (g > 0)) | ((th >= hi) & (g < 0)))
        Ha = torch.where(active[:, :, None] & active[:, None, :], H, torch.eye(P, dtype=DTYPE))
        ga = torch.where(active, g, 0.0)
        evals, evecs = torch.linalg.eigh(Ha)
        evals = evals.abs().clamp_min(1e-8 * evals.abs().amax(-1, keepdim=True).clamp_min(1e-300))
        step = -torch.einsum("bpk,bk,bqk,bq->bp", evecs, 1.0 / evals, evecs, ga)
        finished = -(step * ga).sum(-1) / 2 < _TOL  # the Newton decrement
        done[rows] = finished
        if bool(done.all()) or it == max_iter:
            break
        going = ~finished
        th, step, f_sub, sub = th[going], step[going], f_sub[going], sub.take(torch.nonzero(going).squeeze(1))
        scale = torch.ones(len(th), dtype=DTYPE)
        for _ in range(12):  # halve the steps whose NLL rose
            trial = torch.clamp(th + scale[:, None] * step, lo, hi)
            with torch.no_grad():
                worse = lik.batch(sub, trial) > f_sub + 1e-10
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale / 2, scale)
        theta[rows[going]] = torch.where(worse[:, None], th, trial)
    return BatchFit(theta.numpy(), f.numpy(), done.numpy(), it)
