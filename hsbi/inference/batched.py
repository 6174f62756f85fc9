"""Profile fits of many toys at once: polynomial per-event surrogates and batched Newton in torch.

Each toy's per-event log densities ``l_ic(z)`` are evaluated once, at ``degree + 1`` Chebyshev
nodes of a nuisance window, and replaced by a polynomial in ``u = (z - center) / half_width``;
the yields ``a_c(z), b_c(z)`` likewise. The extended NLL of every toy (``likelihood.py``) is then
a smooth function of ``(mu, u)`` evaluated for all toys in one tensor expression, and minimised by
a damped, box-constrained Newton method whose gradients and Hessians come from autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hsbi.data import Dataset
from hsbi.inference.likelihood import Likelihood
from hsbi.models.base import ComponentDensity, MixtureModel

__all__ = ["BatchedToys", "batched_t", "pool_toys", "prepare_toys"]


def _vandermonde(u: torch.Tensor, degree: int) -> torch.Tensor:
    return torch.stack([u**k for k in range(degree + 1)], dim=-1)


@dataclass(frozen=True)
class BatchedToys:
    """Padded per-event polynomial coefficients of ``B`` toys.

    ``coef``: ``(B, n_max, C, degree + 1)``; ``weights``: ``(B, n_max)`` (0 for padding);
    ``aux``: ``(B,)``; yield polynomials ``a_coef``, ``b_coef``: ``(C, degree + 1)``.
    """

    coef: torch.Tensor
    weights: torch.Tensor
    aux: torch.Tensor
    a_coef: torch.Tensor
    b_coef: torch.Tensor
    center: float
    half_width: float
    u_bounds: tuple[float, float]
    mu_bounds: tuple[float, float]
    aux_sigma: float | None

    @property
    def degree(self) -> int:
        return self.coef.shape[-1] - 1

    def nll(self, mu: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Extended NLL of every toy, ``(B,)``, at ``mu`` and ``u`` of shape ``(B,)``."""
        powers = _vandermonde(u, self.degree)  # (B, D + 1)
        logs = torch.einsum("bncd,bd->bnc", self.coef, powers)
        a = powers @ self.a_coef.T  # (B, C)
        b = powers @ self.b_coef.T
        y = a + mu[:, None] * b
        log_lam = torch.logsumexp(logs + torch.log(y.clamp_min(1e-300))[:, None, :], dim=-1)
        nll = y.sum(-1) - (self.weights * log_lam).sum(-1)
        if self.aux_sigma is not None:
            z = self.center + self.half_width * u
            nll = nll + (z - self.aux) ** 2 / (2 * self.aux_sigma**2)
        return nll


def _window(center: float, half_width: float, nuisance_range: tuple[float, float]) -> tuple[float, float]:
    lo = max(nuisance_range[0], center - half_width)
    hi = min(nuisance_range[1], center + half_width)
    return 0.5 * (lo + hi), 0.5 * (hi - lo)


def _surrogate(
    density: ComponentDensity, x: np.ndarray, center: float, half_width: float, degree: int,
    chunk_events: int = 200_000,
) -> np.ndarray:
    """Per-event polynomial coefficients ``(n, C, degree + 1)`` in ``u`` over the window."""
    nodes_u = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    inv = np.linalg.inv(np.vander(nodes_u, degree + 1, increasing=True))  # values -> coefficients
    parts = [
        np.einsum("dk,knc->ncd", inv, density.log_components(x[s : s + chunk_events], center + half_width * nodes_u))
        for s in range(0, len(x), chunk_events)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(density.processes), degree + 1))


def _assemble(coefs: Sequence[np.ndarray], weights: Sequence[np.ndarray | None], aux: Sequence[float],
              lik: Likelihood, center: float, half_width: float, degree: int) -> BatchedToys:
    n_max = max(1, max(len(c) for c in coefs))
    n_proc = coefs[0].shape[1]
    coef = np.zeros((len(coefs), n_max, n_proc, degree + 1))
    w = np.zeros((len(coefs), n_max))
    for b, (c, wb) in enumerate(zip(coefs, weights)):
        coef[b, : len(c)] = c
        w[b, : len(c)] = 1.0 if wb is None else wb
    nodes_u = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    inv = np.linalg.inv(np.vander(nodes_u, degree + 1, increasing=True))
    a, b = lik.yields(center + half_width * nodes_u)  # (K, C)
    return BatchedToys(
        coef=torch.as_tensor(coef), weights=torch.as_tensor(w),
        aux=torch.as_tensor(np.asarray(aux, dtype=float)),
        a_coef=torch.as_tensor(inv @ a).T.contiguous(), b_coef=torch.as_tensor(inv @ b).T.contiguous(),
        center=center, half_width=half_width, u_bounds=(-1.0, 1.0), mu_bounds=lik.mu_bounds,
        aux_sigma=lik.aux_sigma,
    )


def prepare_toys(
    density: ComponentDensity,
    lik: Likelihood,
    toys: Sequence[Dataset],
    center: float,
    half_width: float,
    nuisance_range: tuple[float, float],
    degree: int = 4,
) -> BatchedToys:
    """Evaluate the density at Chebyshev nodes of ``center +- half_width`` (clipped to
    ``nuisance_range``) for every toy's events and fit polynomials (exact at the nodes)."""
    center, half_width = _window(center, half_width, nuisance_range)
    x = np.concatenate([t.x for t in toys])
    coef = _surrogate(density, x, center, half_width, degree)
    offsets = np.cumsum([0] + [len(t.x) for t in toys])
    return _assemble([coef[offsets[i] : offsets[i + 1]] for i in range(len(toys))],
                     [t.weights for t in toys], [t.aux for t in toys], lik, center, half_width, degree)


def pool_toys(
    density: ComponentDensity,
    lik: Likelihood,
    model: MixtureModel,
    mu: float,
    nuisance: float,
    n_expected: float,
    n_toys: int,
    seed: int,
    half_width: float,
    pool_factor: float = 20.0,
    degree: int = 4,
) -> BatchedToys:
    """Toys at ``(mu, nuisance)`` drawn from per-process pools whose surrogates are computed once.

    Each process's pool holds ``pool_factor`` times its expected yield, simulated at the toy
    point; a toy takes ``n_c ~ Poisson(y_c)`` distinct events of each pool (a draw without
    replacement within a toy; toys overlap by about ``1 / pool_factor``). The auxiliary
    measurement is resampled per toy. Network evaluations drop by about ``n_toys / pool_factor``.
    """
    center, half_width = _window(nuisance, half_width, model.nuisance_range)
    rng = np.random.default_rng(seed)
    yields = model.yields(n_expected, mu, nuisance)
    pools = []
    for proc, y in zip(model.processes, yields):
        size = int(np.ceil(max(pool_factor * y, 10 * np.sqrt(y) + 50))) if y > 0 else 0
        x = model.sample(rng, proc, np.full(size, nuisance))
        pools.append(_surrogate(density, x, center, half_width, degree))
    coefs = []
    for _ in range(n_toys):
        counts = rng.poisson(yields)
        coefs.append(np.concatenate([
            pool[rng.choice(len(pool), size=min(k, len(pool)), replace=False)]
            for pool, k in zip(pools, counts)
        ]))
    aux = nuisance + (lik.aux_sigma or 0.0) * rng.standard_normal(n_toys)
    return _assemble(coefs, [None] * n_toys, aux, lik, center, half_width, degree)


def _powers(u: torch.Tensor, degree: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``u^k`` and its first two derivatives for ``k = 0..degree``: three ``(B, degree + 1)``."""
    k = torch.arange(degree + 1, dtype=u.dtype)
    uu = u[:, None]
    p0 = uu**k
    p1 = k * uu ** (k - 1).clamp_min(0) * (k >= 1)
    p2 = k * (k - 1) * uu ** (k - 2).clamp_min(0) * (k >= 2)
    return p0, p1, p2


def _derivatives(
    toys: BatchedToys, mu: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLL ``(B,)``, gradient ``(B, 2)`` and Hessian ``(B, 2, 2)`` in ``(mu, u)``, analytically.

    With ``lam_i = sum_c y_c e^{l_ic}``: ``d lam/d mu = sum_c b_c e``, ``d lam/d u =
    sum_c (y'_c + y_c l'_ic) e`` and so on; every term is a ratio to ``lam_i``, so the per-event
    maximum of ``l_ic`` cancels."""
    p0, p1, p2 = _powers(u, toys.degree)
    l0, l1, l2 = torch.einsum("bncd,bdk->kbnc", toys.coef, torch.stack([p0, p1, p2], dim=-1))
    a0, a1, a2 = (p @ toys.a_coef.T for p in (p0, p1, p2))  # (B, C)
    b0, b1, b2 = (p @ toys.b_coef.T for p in (p0, p1, p2))
    m = mu[:, None]
    y0, y1, y2 = a0 + m * b0, a1 + m * b1, a2 + m * b2  # (B, C)
    mx = l0.amax(-1, keepdim=True)
    e = torch.exp(l0 - mx)
    lam = (y0[:, None, :] * e).sum(-1)  # (B, n)
    dmu = (b0[:, None, :] * e).sum(-1) / lam
    du = ((y1[:, None, :] + y0[:, None, :] * l1) * e).sum(-1) / lam
    duu = ((y2[:, None, :] + 2 * y1[:, None, :] * l1 + y0[:, None, :] * (l2 + l1**2)) * e).sum(-1) / lam
    dmuu = ((b1[:, None, :] + b0[:, None, :] * l1) * e).sum(-1) / lam
    w = toys.weights
    f = y0.sum(-1) - (w * (torch.log(lam) + mx.squeeze(-1))).sum(-1)
    g_mu = b0.sum(-1) - (w * dmu).sum(-1)
    g_u = y1.sum(-1) - (w * du).sum(-1)
    h_mumu = (w * dmu**2).sum(-1)
    h_uu = y2.sum(-1) - (w * (duu - du**2)).sum(-1)
    h_muu = b1.sum(-1) - (w * (dmuu - dmu * du)).sum(-1)
    if toys.aux_sigma is not None:
        z = toys.center + toys.half_width * u
        f = f + (z - toys.aux) ** 2 / (2 * toys.aux_sigma**2)
        g_u = g_u + toys.half_width * (z - toys.aux) / toys.aux_sigma**2
        h_uu = h_uu + toys.half_width**2 / toys.aux_sigma**2
    g = torch.stack([g_mu, g_u], dim=1)
    h = torch.stack([torch.stack([h_mumu, h_muu], 1), torch.stack([h_muu, h_uu], 1)], 1)
    return f, g, h


def _newton(
    toys: BatchedToys, mu: torch.Tensor, u: torch.Tensor, fix_mu: bool, iterations: int = 40
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Damped, box-constrained Newton over ``(mu, u)`` (or ``u`` alone) for all toys."""
    lo = torch.tensor([toys.mu_bounds[0], toys.u_bounds[0]], dtype=torch.float64)
    hi = torch.tensor([toys.mu_bounds[1], toys.u_bounds[1]], dtype=torch.float64)
    theta = torch.stack([mu, u], dim=1).clone()
    free = torch.tensor([0.0 if fix_mu else 1.0, 1.0], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    for _ in range(iterations):
        f, g, h = _derivatives(toys, theta[:, 0], theta[:, 1])
        g = g * free
        h = h * free[:, None] * free[None, :] + torch.diag(1.0 - free)
        det = h[:, 0, 0] * h[:, 1, 1] - h[:, 0, 1] ** 2
        damp = torch.where((det > 0) & (h[:, 0, 0] > 0) & (h[:, 1, 1] > 0), 0.0,
                           1e-3 + h.abs().amax((1, 2)))
        step = -torch.linalg.solve(h + damp[:, None, None] * eye, g.unsqueeze(-1)).squeeze(-1)
        scale = torch.ones(len(theta), dtype=torch.float64)
        for _ in range(8):  # backtracking: accept where the NLL does not increase
            trial = torch.minimum(torch.maximum(theta + scale[:, None] * step, lo), hi)
            ok = toys.nll(trial[:, 0], trial[:, 1]) <= f + 1e-12 * f.abs()
            if ok.all():
                break
            scale = torch.where(ok, scale, scale / 4)
        moved = torch.where(ok[:, None], trial, theta)
        if (moved - theta).abs().max() < 1e-11:
            theta = moved
            break
        theta = moved
    return theta[:, 0], theta[:, 1], toys.nll(theta[:, 0], theta[:, 1])


def batched_t(toys: BatchedToys, mu: float, mu_start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``t_mu`` of every toy and a flag for fits that ended on the nuisance window's edge."""
    n = len(toys.aux)
    mu_t = torch.full((n,), float(mu), dtype=torch.float64)
    start = torch.full((n,), float(mu if mu_start is None else mu_start), dtype=torch.float64)
    zero = torch.zeros(n, dtype=torch.float64)
    _, u_cond, nll_cond = _newton(toys, mu_t, zero, fix_mu=True)
    _, u_glob, nll_glob = _newton(toys, start, u_cond, fix_mu=False)
    t = (2 * (nll_cond - torch.minimum(nll_glob, nll_cond))).numpy()
    edge = ((u_cond.abs() > 0.999) | (u_glob.abs() > 0.999)).numpy()
    return t, edge
