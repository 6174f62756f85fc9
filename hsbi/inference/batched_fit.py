"""Batched fits of many datasets (toys) of any :class:`~hsbi.inference.fitting.Likelihood`:
projected Newton in torch with ``P x P`` Hessians per dataset.

Each iteration evaluates the NLL of the datasets still being fitted, its analytic gradient and
Hessian (for the declared model the exact one of :mod:`hsbi.inference.derivatives`, the shape
normalisation's curvature included:
taking it once at the start point stalled fits whose NPs crossed |alpha| = 1, where code 4 turns
from a polynomial into an exponential; 3 of 4 many-NP toys then did not converge in 40
iterations). Parameters on a bound with the gradient pushing outwards are held; a step that
raises the NLL is halved; the last step (decrement below ``_PREDICT`` or the tolerance) is
taken without evaluating where it lands.
A fit that does not reach the tolerance within the iteration limit is flagged. A likelihood whose
NLL carries rounding noise (the float32 surrogates of :mod:`hsbi.inference.batched_nd`) declares
``newton_tolerances = (tol, noise)``: the decrement at which its fits stop and the NLL rise that
still counts as no rise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hsbi.inference.statmodel import DTYPE

if TYPE_CHECKING:  # fitting uses this module: no import at run time
    from hsbi.inference.fitting import Likelihood

__all__ = ["BatchFit", "fit_batch"]

#: Newton decrement (g^T H^-1 g / 2) at which a fit stops
_TOL = 1e-7
#: a fit that cannot lower the NLL along its Newton step any more (rounding) is converged if its
#: decrement is below this: its NLL is within 1e-4 of the minimum, t within 2e-4
_LOOSE = 1e-4
#: a parameter this close to a bound (relative to its range) counts as on it
_EDGE = 1e-6
#: a Newton step with a decrement below this is taken without evaluating the NLL where it lands:
#: the quadratic model's value there (f - decrement) is within ~decrement^1.5 (~3e-8) of the true
#: one, and Newton's quadratic convergence puts the point within ~decrement^2 of the minimum (one
#: evaluation fewer for about half the fits)
_PREDICT = 1e-5


def _newton_step(H: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``-H^-1 g`` per row: a Cholesky solve where ``H`` is positive definite and reasonably
    conditioned (the common case, ~5x cheaper than ``eigh``), else through the eigenvalues with
    their absolute values, floored at 1e-8 of the largest (a descent direction where ``H`` is
    indefinite or near singular)."""
    L, info = torch.linalg.cholesky_ex(H)
    d = torch.diagonal(L, dim1=-2, dim2=-1)
    pd = (info == 0) & (d.amin(-1) ** 2 > 1e-8 * d.amax(-1) ** 2)
    new = torch.empty_like(g)
    if bool(pd.any()):
        new[pd] = -torch.cholesky_solve(g[pd].unsqueeze(-1), L[pd]).squeeze(-1)
    if not bool(pd.all()):
        evals, evecs = torch.linalg.eigh(H[~pd])
        evals = evals.abs().clamp_min(1e-8 * evals.abs().amax(-1, keepdim=True).clamp_min(1e-300))
        new[~pd] = -torch.einsum("bpk,bk,bqk,bq->bp", evecs, 1.0 / evals, evecs, g[~pd])
    return new


@dataclass(frozen=True)
class BatchFit:
    theta: np.ndarray  # (B, P)
    nll: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    iterations: int


def fit_batch(lik: Likelihood, data: Any, start: np.ndarray, fixed: np.ndarray | None = None,
              max_iter: int = 40, reference: bool = False) -> BatchFit:
    """Minimise every dataset's NLL from ``start`` (B, P); ``fixed`` (P,) or (B, P) bool holds
    those parameters at their start values (the POI for conditional fits, an NP for impacts).
    ``reference`` asks the declared model for the derivatives' tensor expressions instead of
    its fused kernels (the benchmarks' baseline)."""
    model = lik.model
    tol, noise = getattr(lik, "newton_tolerances", (_TOL, 1e-10))
    theta = torch.as_tensor(np.asarray(start, dtype=float), dtype=DTYPE).clone()
    B, P = theta.shape
    hold = np.array([p.fixed for p in model.parameters]) | (np.zeros(P, bool) if fixed is None else fixed)
    free = torch.as_tensor(np.broadcast_to(~hold, (B, P)).copy())
    lo, hi = (torch.as_tensor(model.bounds[:, k], dtype=DTYPE) for k in (0, 1))
    edge = _EDGE * (hi - lo)
    done = torch.zeros(B, dtype=torch.bool)
    f = torch.full((B,), torch.inf, dtype=DTYPE)  # the NLL at the last accepted point
    last = theta.clone()  # the last accepted point
    step = torch.zeros(B, P, dtype=DTYPE)  # the step that led from it to theta
    decrement = torch.full((B,), torch.inf, dtype=DTYPE)  # the last Newton decrement
    it = 0
    for it in range(1, max_iter + 1):
        # every row evaluates once per iteration: the value at a trial point decides whether it
        # is accepted (its gradient and Hessian then give the next step) or the step is halved
        rows = torch.nonzero(~done).squeeze(1)
        th = theta[rows]
        f_new, g, H = lik.nll_grad_hess(data, th, rows=rows.numpy(), reference=reference)
        worse = ~(f_new <= f[rows] + noise)
        if bool(worse.any()):
            bad = rows[worse]
            step[bad] = step[bad] / 2
            theta[bad] = torch.clamp(last[bad] + step[bad], lo, hi)
            stuck = bad[step[bad].abs().amax(-1) < 1e-9]
            done[stuck] = True  # no decrease along the step: the last point stands (converged
            # only if its decrement was within _LOOSE: the NLL is then within that of its minimum)
        ok = ~worse
        rows, th, g, H = rows[ok], th[ok], g[ok], H[ok]
        f[rows], last[rows] = f_new[ok], th
        # held: parameters within _EDGE of a bound with the gradient pushing outwards (MIGRAD's
        # bounded minima sit ~1e-12 inside, where a free Newton step would leave the region)
        active = free[rows] & ~(((th <= lo + edge) & (g > 0)) | ((th >= hi - edge) & (g < 0)))
        Ha = torch.where(active[:, :, None] & active[:, None, :], H, torch.eye(P, dtype=DTYPE))
        ga = torch.where(active, g, 0.0)
        new = _newton_step(Ha, ga)
        decrement[rows] = -(new * ga).sum(-1) / 2
        target = last[rows] + new
        predict = (decrement[rows] < max(_PREDICT, tol)) & (torch.clamp(target, lo, hi) == target).all(-1)
        if bool(predict.any()):  # the last step, unless a bound cuts it
            taken = rows[predict]
            last[taken], f[taken] = target[predict], f[taken] - decrement[taken]
        finished = (decrement[rows] < tol) | predict
        done[rows] = finished
        going = rows[~finished]
        step[going] = new[~finished]
        theta[going] = torch.clamp(last[going] + step[going], lo, hi)
        if bool(done.all()):
            break
    return BatchFit(last.numpy(), f.numpy(), (done & (decrement < max(_LOOSE, tol))).numpy(), it)
