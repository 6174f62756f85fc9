"""Batched fits of many datasets (toys) of any :class:`~hsbi.inference.fitting.Likelihood`:
projected Newton in numpy with ``P x P`` Hessians per dataset (no torch: a workspace fits
without it; a likelihood evaluated in torch hands its tensors over without a copy).

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


def _newton_step(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``-H^-1 g`` per row: a Cholesky solve where ``H`` is positive definite and reasonably
    conditioned (the common case), else through the eigenvalues with their absolute values,
    floored at 1e-8 of the largest (a descent direction where ``H`` is indefinite or near
    singular)."""
    B = g.shape[0]
    L = np.zeros_like(H)
    ok = np.ones(B, dtype=bool)
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:  # some row is not positive definite: row by row
        for b in range(B):
            try:
                L[b] = np.linalg.cholesky(H[b])
            except np.linalg.LinAlgError:
                ok[b] = False
    d = np.abs(np.diagonal(L, axis1=-2, axis2=-1))
    pd = ok & (d.min(-1) ** 2 > 1e-8 * d.max(-1) ** 2)
    new = np.empty_like(g)
    if pd.any():
        Lp = L[pd]
        y = np.linalg.solve(Lp, g[pd][..., None])
        new[pd] = -np.linalg.solve(np.swapaxes(Lp, -1, -2), y)[..., 0]
    if not pd.all():
        evals, evecs = np.linalg.eigh(H[~pd])
        evals = np.abs(evals)
        evals = np.maximum(evals, 1e-8 * np.maximum(evals.max(-1, keepdims=True), 1e-300))
        new[~pd] = -np.einsum("bpk,bk,bqk,bq->bp", evecs, 1.0 / evals, evecs, g[~pd])
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
    theta = np.array(start, dtype=np.float64)
    B, P = theta.shape
    hold = np.array([p.fixed for p in model.parameters]) | (np.zeros(P, bool) if fixed is None else fixed)
    free = np.broadcast_to(~hold, (B, P)).copy()
    lo, hi = (np.asarray(model.bounds[:, k], dtype=np.float64) for k in (0, 1))
    edge = _EDGE * (hi - lo)
    eye = np.eye(P)
    done = np.zeros(B, dtype=bool)
    f = np.full(B, np.inf)  # the NLL at the last accepted point
    last = theta.copy()  # the last accepted point
    step = np.zeros((B, P))  # the step that led from it to theta
    decrement = np.full(B, np.inf)  # the last Newton decrement
    it = 0
    for it in range(1, max_iter + 1):
        # every row evaluates once per iteration: the value at a trial point decides whether it
        # is accepted (its gradient and Hessian then give the next step) or the step is halved
        rows = np.flatnonzero(~done)
        th = theta[rows]
        f_new, g, H = (np.asarray(a, dtype=np.float64) for a in lik.nll_grad_hess(data, th, rows=rows,
                                                                                  reference=reference))
        worse = ~(f_new <= f[rows] + noise)
        if worse.any():
            bad = rows[worse]
            step[bad] = step[bad] / 2
            theta[bad] = np.clip(last[bad] + step[bad], lo, hi)
            stuck = bad[np.abs(step[bad]).max(-1) < 1e-9]
            done[stuck] = True  # no decrease along the step: the last point stands (converged
            # only if its decrement was within _LOOSE: the NLL is then within that of its minimum)
        ok = ~worse
        rows, th, g, H = rows[ok], th[ok], g[ok], H[ok]
        f[rows], last[rows] = f_new[ok], th
        # held: parameters within _EDGE of a bound with the gradient pushing outwards (MIGRAD's
        # bounded minima sit ~1e-12 inside, where a free Newton step would leave the region)
        active = free[rows] & ~(((th <= lo + edge) & (g > 0)) | ((th >= hi - edge) & (g < 0)))
        Ha = np.where(active[:, :, None] & active[:, None, :], H, eye)
        ga = np.where(active, g, 0.0)
        new = _newton_step(Ha, ga)
        decrement[rows] = -(new * ga).sum(-1) / 2
        target = last[rows] + new
        predict = (decrement[rows] < max(_PREDICT, tol)) & (np.clip(target, lo, hi) == target).all(-1)
        if predict.any():  # the last step, unless a bound cuts it
            taken = rows[predict]
            last[taken], f[taken] = target[predict], f[taken] - decrement[taken]
        finished = (decrement[rows] < tol) | predict
        done[rows] = finished
        going = rows[~finished]
        step[going] = new[~finished]
        theta[going] = np.clip(last[going] + step[going], lo, hi)
        if done.all():
            break
    return BatchFit(last, f, done & (decrement < max(_LOOSE, tol)), it)
