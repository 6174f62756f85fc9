"""Profile fits of many toys at once with ``P`` nuisances: per-event polynomial surrogates and a
batched, box-constrained Newton method in torch.

Surrogates. Every event's per-process log density ``l_ic(z)`` is evaluated once, on the tensor
grid of ``(d + 1)^P`` Chebyshev nodes of a nuisance window ``z = center + half_width * u``,
``u in [-1, 1]^P``, and replaced by a polynomial of *total* degree ``d`` in ``u`` (the
``binom(d + P, P)`` monomials ``u^alpha``, ``|alpha| <= d``) fitted by least squares to those
values; the yields ``a_c(z), b_c(z)`` likewise. Why this choice: the cost of a Newton iteration
is one pass over the coefficients (15 per event and process for ``P = 2``, ``d = 4``, against 25
for a tensor-product basis), while the tensor Chebyshev grid keeps the least-squares fit well
conditioned and its error close to the best total-degree approximation (for ``P = 1`` it is
interpolation at ``d + 1`` Chebyshev nodes). Events live in one table ``(N, C, T)``; a toy is a
row of indices into it, so events shared by toys (pooled toys) are evaluated and stored once.

Fits. The extended NLL of ``likelihood.py`` with a constraint per nuisance (Gaussian,
log-normal or none, :class:`~hsbi.models.constraint.Constraint`) has analytic gradients and
Hessians in ``theta = (mu, u_1..u_P)`` (:meth:`_Chunk.derivatives`): the toys are one more
:class:`~hsbi.inference.fitting.Likelihood` (:class:`SurrogateLikelihood`), minimised by the
one batched Newton method of every model (:func:`~hsbi.inference.batched_fit.fit_batch`) and
their intervals found by :func:`~hsbi.inference.toys.wilks_intervals`. Toys are processed in
chunks of 32 (the fastest size measured: larger ones leave the cache, smaller ones pay
per-operation overhead), their rows gathered once per chunk.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import chi2

from hsbi.exceptions import ConfigError
from hsbi.inference.batched_fit import fit_batch
from hsbi.inference.mixture import MixtureParameters
from hsbi.inference.statmodel import Parameter, ParameterSpace
from hsbi.inference.toys import wilks_intervals
from hsbi.models.constraint import Constraint

__all__ = [
    "Basis",
    "BatchedToys",
    "FitResult",
    "SurrogateLikelihood",
    "Window",
    "assemble",
    "fit",
    "intervals",
    "pool_sizes",
    "pooled_toys",
    "prepare",
    "profile_fits",
    "profile_t",
    "surrogate_coefficients",
]

#: ``log_components(x (n, D), z (K, P)) -> (K, n, C)``.
LogComponents = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``yields(z (K, P)) -> (a, b)``, each ``(K, C)``: yields ``a + mu * b``.
Yields = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``sample(rng, process, size) -> (size, D)`` events of one process at the toy point.
Sampler = Callable[[np.random.Generator, str, int], np.ndarray]

#: Toys per chunk (fastest measured among 16, 32, 64, 128 on 2 cores).
_TOYS_PER_CHUNK = 32
#: NLL changes below this count as rounding (float32 ``u``-dependence, ``~1e-7`` per event).
_NLL_NOISE = 1e-6
#: ``g^T H^-1 g`` at which a fit stops (:class:`SurrogateLikelihood`).
_TOL = 1e-4
#: ``|u|`` beyond which a nuisance sits on its window's edge.
_EDGE = 0.999


@dataclass(frozen=True)
class Window:
    """The nuisance box ``z = center + half_width * u``, ``u in [-1, 1]^P``; two ``(P,)``.

    ``bounded``: ``(2, P)``, whether the low (row 0) and high (row 1) edge of each nuisance is
    one of its allowed bounds (``None``: neither). A fit that ends on a bounded edge is the
    constrained fit; one on another edge left the surrogate's window and failed."""

    center: np.ndarray
    half_width: np.ndarray
    bounded: np.ndarray | None = None

    @classmethod
    def clipped(cls, center: Sequence[float], half_width: Sequence[float],
                ranges: Sequence[tuple[float, float]]) -> Window:
        """``center +- half_width`` intersected with the nuisances' allowed ``ranges``."""
        low, high = np.array([r[0] for r in ranges], float), np.array([r[1] for r in ranges], float)
        lo = np.maximum(low, np.subtract(center, half_width))
        hi = np.minimum(high, np.add(center, half_width))
        return cls(0.5 * (lo + hi), 0.5 * (hi - lo), np.array([lo <= low, hi >= high]))

    def nuisance(self, u: np.ndarray) -> np.ndarray:
        """Nuisance values ``(..., P)`` at window coordinates ``u (..., P)``."""
        return self.center + self.half_width * u

    def edges(self) -> np.ndarray:
        """``(2, P)`` bool: the edges that are allowed bounds (see ``bounded``)."""
        p = len(np.atleast_1d(self.center))
        return np.zeros((2, p), bool) if self.bounded is None else np.asarray(self.bounded, bool)

    def off_window(self, u: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: a nuisance of ``u (B, P)`` on an edge of the window that is no bound."""
        bounded = self.edges()
        return ((u < -_EDGE) & ~bounded[0] | (u > _EDGE) & ~bounded[1]).any(-1)


@dataclass(frozen=True)
class Basis:
    """Monomials ``u^alpha`` of total degree ``<= degree`` in ``P`` variables.

    ``exponents``: ``(T, P)``; ``nodes``: the ``(degree + 1)^P`` Chebyshev grid ``(K, P)``;
    ``fit``: ``(T, K)``, node values to least-squares coefficients.
    """

    exponents: np.ndarray
    nodes: np.ndarray
    fit: np.ndarray

    @classmethod
    def total_degree(cls, n_nuisances: int, degree: int) -> Basis:
        """The basis for ``P = n_nuisances``, ordered by degree, the constant first (the split
        of the coefficient table into constants and the rest relies on it)."""
        exps = np.array([e for e in itertools.product(range(degree + 1), repeat=n_nuisances)
                         if sum(e) <= degree], dtype=np.int64).reshape(-1, n_nuisances)
        exps = exps[np.lexsort((*exps.T[::-1], exps.sum(1)))]  # by degree: 1, u1, u2, ...
        cheb = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
        nodes = np.array(list(itertools.product(cheb, repeat=n_nuisances))).reshape(-1, n_nuisances)
        return cls(exps, nodes, np.linalg.pinv(np.prod(nodes[:, None, :] ** exps[None], axis=-1)))

    @property
    def n_nuisances(self) -> int:
        return self.exponents.shape[1]

    def derivatives(self, u: torch.Tensor) -> torch.Tensor:
        """Monomials and their first and second derivatives at ``u (B, P)``: ``(B, T, R)`` with
        rows ``R = 1 + P + P * P``: value, ``d/du_j``, ``d^2/du_j du_k`` (row-major). Each row is
        a product over the variables of the 0th, 1st or 2nd derivative of ``u_j^e``: one gather
        and one product (a few ops whatever ``T`` and ``P``)."""
        e = torch.as_tensor(self.exponents, dtype=u.dtype)  # (T, P)
        uu = u[:, None, :]
        p0 = uu ** e  # (B, T, P)
        p1 = e * uu ** (e - 1).clamp_min(0) * (e >= 1)
        p2 = e * (e - 1) * uu ** (e - 2).clamp_min(0) * (e >= 2)
        orders = torch.stack([p0, p1, p2], dim=-1)  # (B, T, P, 3)
        sel = torch.as_tensor(_derivative_orders(self.n_nuisances))  # (R, P)
        picked = orders[:, :, torch.arange(self.n_nuisances)[None, :], sel]  # (B, T, R, P)
        return picked.prod(-1)


def _derivative_orders(n: int) -> np.ndarray:
    """Per row of :meth:`Basis.derivatives` (value, ``d/du_j``, ``d^2/du_j du_k``), the order of
    the derivative taken of each variable's factor: ``(1 + n + n * n, n)``."""
    rows = [np.zeros(n, dtype=np.int64)]
    rows += [np.eye(n, dtype=np.int64)[j] for j in range(n)]
    rows += [np.eye(n, dtype=np.int64)[j] + np.eye(n, dtype=np.int64)[k]
             for j, k in itertools.product(range(n), repeat=2)]
    return np.stack(rows)


@dataclass(frozen=True)
class BatchedToys:
    """``B`` toys over one table of per-event surrogate coefficients.

    The table of coefficients of ``l_ic(u)`` is split: constant terms ``c0 (N, C)`` in float64
    and the others ``coef (N, C * (T - 1))`` in float32 (they carry only the ``u``-dependence,
    ``O(1)`` over the window, so float32 costs ``~1e-7`` per event while halving the memory
    traffic of the dominant matmul). ``index``: ``(B, n_max)`` rows of the table per toy
    (padding has weight 0); ``weights``: ``(B, n_max)``; ``aux``: ``(B, P)``
    auxiliary measurements; ``a_coef``, ``b_coef``: ``(C, T)`` yield polynomials;
    ``constraints``: per nuisance, its auxiliary measurement's kind and width.
    """

    c0: torch.Tensor
    coef: torch.Tensor
    index: torch.Tensor
    weights: torch.Tensor
    aux: torch.Tensor
    a_coef: torch.Tensor
    b_coef: torch.Tensor
    basis: Basis
    window: Window
    mu_bounds: tuple[float, float]
    constraints: tuple[Constraint, ...]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n_nuisances(self) -> int:
        return self.basis.n_nuisances

    def subset(self, rows: slice) -> BatchedToys:
        """The toys ``rows`` (sharing the table)."""
        return replace(self, index=self.index[rows], weights=self.weights[rows], aux=self.aux[rows])

    def nuisance(self, u: np.ndarray) -> np.ndarray:
        """Nuisance values ``(B, P)`` at window coordinates ``u (B, P)``."""
        return self.window.nuisance(u)


def surrogate_coefficients(log_components: LogComponents, x: np.ndarray, window: Window,
                           basis: Basis, chunk_events: int = 100_000) -> np.ndarray:
    """Per-event coefficients ``(n, C, T)`` of ``l_ic(u)`` over ``window`` for events ``x (n, D)``."""
    z = window.nuisance(basis.nodes)
    parts = [np.einsum("tk,knc->nct", basis.fit, log_components(x[s : s + chunk_events], z))
             for s in range(0, len(x), chunk_events)]
    if not parts:
        return np.zeros((0, 0, len(basis.exponents)))
    return np.concatenate(parts)


def assemble(table: np.ndarray, rows: Sequence[np.ndarray], weights: Sequence[np.ndarray | None],
             aux: np.ndarray, yields: Yields, window: Window, basis: Basis,
             mu_bounds: tuple[float, float], constraints: Sequence[Constraint]) -> BatchedToys:
    """Toys from a coefficient ``table (N, C, T)``, each toy's ``rows`` of it (with optional
    event ``weights``), auxiliary measurements ``aux (B, P)`` and the yield function."""
    n_max = max(1, max((len(r) for r in rows), default=1))
    index = np.zeros((len(rows), n_max), dtype=np.int64)
    w = np.zeros((len(rows), n_max))
    for b, (r, wb) in enumerate(zip(rows, weights)):
        index[b] = r[0] if len(r) else 0  # padding repeats a real event: finite terms, weight 0
        index[b, : len(r)] = r
        w[b, : len(r)] = 1.0 if wb is None else wb
    a, b_ = yields(window.nuisance(basis.nodes))  # (K, C)
    table = torch.as_tensor(np.asarray(table, dtype=float))
    return BatchedToys(
        c0=table[:, :, 0].contiguous(), coef=table[:, :, 1:].reshape(len(table), -1).to(torch.float32),
        index=torch.as_tensor(index),
        weights=torch.as_tensor(w), aux=torch.as_tensor(np.asarray(aux, dtype=float)).reshape(len(rows), -1),
        a_coef=torch.as_tensor(basis.fit @ a).T.contiguous(), b_coef=torch.as_tensor(basis.fit @ b_).T.contiguous(),
        basis=basis, window=window, mu_bounds=mu_bounds, constraints=tuple(constraints),
    )


def prepare(log_components: LogComponents, xs: Sequence[np.ndarray], weights: Sequence[np.ndarray | None],
            aux: np.ndarray, yields: Yields, window: Window, basis: Basis,
            mu_bounds: tuple[float, float], constraints: Sequence[Constraint]) -> BatchedToys:
    """Toys from their events ``xs`` (each ``(n_b, D)``), event ``weights`` (``None``: 1) and
    auxiliary measurements ``aux (B, P)``: every event's surrogate over ``window``."""
    table = surrogate_coefficients(log_components, np.concatenate(xs), window, basis)
    offsets = np.cumsum([0] + [len(x) for x in xs])
    rows = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(xs))]
    return assemble(table, rows, weights, aux, yields, window, basis, mu_bounds, constraints)


def pool_sizes(yields_at_truth: np.ndarray, pool_factor: float = 20.0) -> np.ndarray:
    """Events in each process's pool: ``pool_factor`` times its expected yield, at least
    ``10 sqrt(y) + 50`` (none for a process with no yield)."""
    return np.array([int(np.ceil(max(pool_factor * y, 10 * np.sqrt(y) + 50))) if y > 0 else 0
                     for y in np.asarray(yields_at_truth, dtype=float)], dtype=np.int64)


def pooled_toys(log_components: LogComponents, sample: Sampler, processes: Sequence[str],
                yields_at_truth: np.ndarray, n_toys: int, rng: np.random.Generator, window: Window,
                basis: Basis, pool_factor: float = 20.0) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Per-process pools simulated at the toy point, their surrogate table, and the toys.

    Each process's pool holds ``pool_factor`` times its expected yield; a toy takes
    ``n_c ~ Poisson(y_c)`` distinct events of each pool. Returns the table ``(N, C, T)``, each
    toy's rows of it and each toy's events (``(n_b, D)``, for cross-checks).
    """
    pools, offset, tables = [], 0, []
    for proc, size in zip(processes, pool_sizes(yields_at_truth, pool_factor)):
        x = sample(rng, proc, int(size))
        tables.append(surrogate_coefficients(log_components, x, window, basis))
        pools.append((x, offset))
        offset += size
    rows, events = [], []
    for _ in range(n_toys):
        counts = rng.poisson(yields_at_truth)
        picks = [rng.choice(len(x), size=min(k, len(x)), replace=False) for (x, _), k in zip(pools, counts)]
        rows.append(np.concatenate([p + off for p, (_, off) in zip(picks, pools)]))
        events.append(np.concatenate([x[p] for p, (x, _) in zip(picks, pools)]))
    table = np.concatenate([t for t in tables if t.size]) if offset else np.zeros((0, len(processes), len(basis.exponents)))
    return table, rows, events


@dataclass(frozen=True)
class _Chunk:
    """A few toys with their rows of the table gathered: ``c0 (b, C, n)``, ``coef (b, C, T - 1,
    n)`` (float32), weights ``w (b, n)`` and ``aux (b, P)``."""

    toys: BatchedToys
    c0: torch.Tensor
    coef: torch.Tensor
    w: torch.Tensor
    aux: torch.Tensor

    @classmethod
    def of(cls, toys: BatchedToys) -> _Chunk:
        b, n = toys.index.shape
        flat = toys.index.reshape(-1)
        c0 = toys.c0.index_select(0, flat).view(b, n, -1).transpose(1, 2)
        c = c0.shape[1]  # coefficients per (toy, process) as rows of one matrix: (b, C, T - 1, n)
        coef = toys.coef.index_select(0, flat).view(b, n, c, -1).permute(0, 2, 3, 1).contiguous()
        return cls(toys, c0, coef, toys.weights, toys.aux)

    @property
    def batch(self) -> int:
        return len(self.w)

    def take(self, rows: torch.Tensor | np.ndarray) -> _Chunk:
        """The toys ``rows`` of this chunk (the table, basis and window shared)."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return _Chunk(self.toys, self.c0[rows], self.coef[rows], self.w[rows], self.aux[rows])

    def derivatives(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """NLL ``(b,)``, gradient ``(b, Q)`` and Hessian ``(b, Q, Q)`` at ``theta = (mu, u) (b, Q)``.

        With ``lam_i = sum_c y_c e^{l_ic}`` and ``r_ic = e^{l_ic} / lam_i``, the gradient of
        ``log lam_i`` is ``G_i = sum_c r_ic (b_c, y'_c + y_c l'_ic)`` and its Hessian ``sum_c r_ic
        M_ic - G_i G_i^T`` with ``M_ic`` the second derivatives of ``y_c e^{l_ic}`` over
        ``e^{l_ic}``. Summed over events, ``r M`` needs per process only ``sum_i w r``,
        ``sum_i w r l'``, ``sum_i w r l''`` and ``sum_i w r l' l'^T``: one matmul. ``l, l', l''``
        of all events come from one batched matmul per (toy, process) with the basis' derivatives."""
        t = self.toys
        p = t.n_nuisances
        mu, u = theta[:, 0], theta[:, 1:]
        d = t.basis.derivatives(u)  # (b, T, R)
        (b_, c, n), rows = self.c0.shape, d.shape[-1]
        d_t = d[:, 1:].transpose(1, 2).to(torch.float32)[:, None].expand(b_, c, rows, -1).reshape(b_ * c, rows, -1)
        lr = torch.bmm(d_t, self.coef.view(b_ * c, -1, n)).double().view(b_, c, rows, n)
        l0 = lr[:, :, 0] + self.c0  # (b, C, n)
        l1 = lr[:, :, 1 : 1 + p]  # (b, C, P, n)
        yb = torch.einsum("ct,btr->bcr", t.b_coef, d)
        y = torch.einsum("ct,btr->bcr", t.a_coef, d) + mu[:, None, None] * yb  # (b, C, R)
        y0, y1, y2 = y[..., 0], y[..., 1 : 1 + p], y[..., 1 + p :].unflatten(-1, (p, p))
        b0, b1 = yb[..., 0], yb[..., 1 : 1 + p]
        mx = l0.amax(1, keepdim=True)
        e = torch.exp(l0 - mx)
        lam = torch.bmm(y0[:, None, :], e)[:, 0]  # (b, n)
        r = e / lam[:, None, :]  # (b, C, n)
        wr = r * self.w[:, None, :]
        g_event = torch.cat([torch.bmm(b0[:, None, :], r),
                             torch.bmm(y1.transpose(1, 2), r) + ((r * y0[..., None])[:, :, None] * l1).sum(1)], 1)
        wg = g_event * self.w[:, None, :]  # (b, Q, n)
        cols = torch.cat([wr[:, :, None], wr[:, :, None] * l1], 2).view(b_ * c, 1 + p, n)
        sums = torch.bmm(lr.view(b_ * c, rows, n)[:, 1:], cols.transpose(1, 2)).view(b_, c, rows - 1, 1 + p)
        s_r = wr.sum(-1)  # (b, C)
        s_l1 = sums[:, :, :p, 0]  # (b, C, P)
        s_l2 = sums[:, :, p:, 0].unflatten(-1, (p, p)) + sums[:, :, :p, 1:]  # sum w r (l'' + l' l'^T)
        s_muu = (b1 * s_r[..., None] + b0[..., None] * s_l1).sum(1)  # (b, P)
        s_uu = (y2 * s_r[..., None, None] + y1[..., :, None] * s_l1[..., None, :]
                + s_l1[..., :, None] * y1[..., None, :] + y0[..., None, None] * s_l2).sum(1)
        f = y0.sum(-1) - (self.w * (torch.log(lam) + mx[:, 0])).sum(-1)
        g = torch.cat([b0.sum(-1, keepdim=True), y1.sum(1)], -1) - wg.sum(-1)
        h = torch.bmm(wg, g_event.transpose(1, 2))
        h[:, 0, 1:] -= s_muu - b1.sum(1)
        h[:, 1:, 0] = h[:, 0, 1:]
        h[:, 1:, 1:] += y2.sum(1) - s_uu
        return self._constrain(u, f, g, h)

    def _constrain(self, u: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
                   h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Add each nuisance's constraint term: ``d^2 / (2 sigma^2)`` with ``d = z - aux``
        (Gaussian) or ``log z - log aux`` (log-normal), and its derivatives in ``u``."""
        t = self.toys
        z = torch.as_tensor(t.window.center) + torch.as_tensor(t.window.half_width) * u  # (b, P)
        f, g, h = f.clone(), g.clone(), h.clone()
        for p, term in enumerate(t.constraints):
            if term.free:
                continue
            hw, inv_var = float(t.window.half_width[p]), 1.0 / term.sigma**2
            if term.kind == "gaussian":
                d, d1, d2 = z[:, p] - self.aux[:, p], torch.ones_like(f), torch.zeros_like(f)
            else:  # lognormal; the window lies at z > 0
                d = torch.log(z[:, p]) - torch.log(self.aux[:, p])
                d1, d2 = 1.0 / z[:, p], -1.0 / z[:, p] ** 2
            f = f + 0.5 * inv_var * d**2
            g[:, 1 + p] += hw * inv_var * d * d1
            h[:, 1 + p, 1 + p] += hw**2 * inv_var * (d1**2 + d * d2)
        return f, g, h


@dataclass(frozen=True)
class SurrogateLikelihood:
    """The toys' NLL in ``theta = (mu, u_1..u_P)`` as a :class:`hsbi.inference.fitting.Likelihood`
    over a :class:`_Chunk` of them: ``mu`` within the POI's bounds, each ``u`` within the window
    ``[-1, 1]``; fitted by :func:`~hsbi.inference.batched_fit.fit_batch` and
    :func:`~hsbi.inference.toys.wilks_intervals` like every other model. ``newton_tolerances``:
    the coefficients' float32 carries ``~1e-7`` per event, so a fit stops at a Newton decrement of
    :data:`_TOL` / 2 (``g^T H^-1 g < _TOL``) and an NLL rise below :data:`_NLL_NOISE` is rounding."""

    model: ParameterSpace
    newton_tolerances: tuple[float, float] = (_TOL / 2, _NLL_NOISE)

    @classmethod
    def of(cls, toys: BatchedToys) -> SurrogateLikelihood:
        params = (Parameter("mu", "normfactor", tuple(toys.mu_bounds), float(np.mean(toys.mu_bounds))),
                  *(Parameter(f"u{p}", "nuisance", (-1.0, 1.0), 0.0) for p in range(toys.n_nuisances)))
        return cls(MixtureParameters(params))

    def nll_grad_hess(self, data: _Chunk, theta: np.ndarray, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        chunk = data if rows is None or np.array_equal(rows, np.arange(data.batch)) else data.take(rows)
        f, g, h = chunk.derivatives(torch.as_tensor(np.asarray(theta, dtype=np.float64)))
        return f, g, h if hessian else None


@dataclass(frozen=True)
class FitResult:
    """Per toy: ``mu (B,)``, ``nuisance (B, P)`` (in nuisance units), ``u (B, P)`` (window
    coordinates), ``nll (B,)``, ``at_edge (B,)``, set where a nuisance ended on an edge of the
    window that is not one of its bounds (the surrogate's validity ends there; a fit on a bound
    is the constrained fit), and ``converged (B,)``, false where the iteration limit stopped the
    fit."""

    mu: np.ndarray
    nuisance: np.ndarray
    u: np.ndarray
    nll: np.ndarray
    at_edge: np.ndarray
    converged: np.ndarray

    @property
    def failed(self) -> np.ndarray:
        """``(B,)``: on a window edge that is no bound, or not converged."""
        return self.at_edge | ~self.converged


def toy_threads() -> int:
    """Threads that fit chunks of toys side by side: ``HSBI_TOY_THREADS``, else the cores this
    process may run on (at most 4). The chunks are independent; each one's work is many small
    torch ops (one intra-op thread each, no spinning pool) whose dispatch holds the GIL, so two
    cores fit ~1.3x as many toys per second (measured), for twice the CPU."""
    env = os.environ.get("HSBI_TOY_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"HSBI_TOY_THREADS: expected a positive integer, got {env!r}")
        return int(env)
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _per_chunk(toys: BatchedToys, chunk: int, step: Callable[[_Chunk, slice], Sequence[np.ndarray]]
               ) -> list[np.ndarray]:
    """``step`` on every chunk of ``chunk`` toys (their rows gathered once), outputs joined in
    order. Chunks run on :func:`toy_threads` threads; a chunk's result does not depend on them."""
    slices = [slice(s, s + chunk) for s in range(0, len(toys), chunk)]
    threads = min(toy_threads(), len(slices))
    if threads <= 1:
        outputs = [step(_Chunk.of(toys.subset(sl)), sl) for sl in slices]
    else:
        with ThreadPoolExecutor(threads) as pool, _intra_op_threads(1):
            outputs = list(pool.map(lambda sl: step(_Chunk.of(toys.subset(sl)), sl), slices))
    return [np.concatenate(parts) for parts in zip(*outputs)]


@contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside (restored after): threads of our own must
    not each start a pool of spinning OpenMP workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start(toys: BatchedToys, mu: np.ndarray | float, u: np.ndarray | None) -> np.ndarray:
    """``theta (B, Q)`` from ``mu`` (scalar or ``(B,)``) and ``u (B, P)`` (default 0)."""
    n, p = len(toys), toys.n_nuisances
    mu0 = np.broadcast_to(np.asarray(mu, dtype=float), (n,))
    u0 = np.zeros((n, p)) if u is None else np.asarray(u, dtype=float).reshape(n, p)
    return np.c_[mu0, u0]


def _held(toys: BatchedToys, fix_mu: bool) -> np.ndarray:
    return np.array([fix_mu] + [False] * toys.n_nuisances)


def _result(toys: BatchedToys, theta: np.ndarray, nll: np.ndarray, converged: np.ndarray) -> FitResult:
    u = theta[:, 1:]
    return FitResult(theta[:, 0].copy(), toys.nuisance(u), u, nll, toys.window.off_window(u), converged)


def fit(toys: BatchedToys, mu_start: np.ndarray | float, u_start: np.ndarray | None = None,
        fix_mu: bool = False, iterations: int = 50, chunk: int = _TOYS_PER_CHUNK) -> FitResult:
    """Global (or, with ``fix_mu``, conditional) fits of all toys by
    :func:`~hsbi.inference.batched_fit.fit_batch` (at most ``iterations`` Newton iterations),
    from ``mu_start`` (scalar or ``(B,)``) and ``u_start (B, P)`` (default: the window's
    center); see :class:`SurrogateLikelihood` for the tolerance."""
    lik, theta0 = SurrogateLikelihood.of(toys), _start(toys, mu_start, u_start)

    def one(ch: _Chunk, sl: slice) -> tuple[np.ndarray, ...]:
        res = fit_batch(lik, ch, theta0[sl], fixed=_held(toys, fix_mu), max_iter=iterations)
        return res.theta, res.nll, res.converged

    return _result(toys, *_per_chunk(toys, chunk, one))


def profile_fits(toys: BatchedToys, mu: float, mu_start: float | None = None,
                 chunk: int = _TOYS_PER_CHUNK) -> tuple[FitResult, FitResult]:
    """Per toy the conditional fit at ``mu`` (from the window's center) and the global fit (from
    ``(mu_start or mu, u_hat_mu)``), with each chunk's rows gathered once for both."""
    lik, theta0 = SurrogateLikelihood.of(toys), _start(toys, mu, None)
    first_mu = float(mu if mu_start is None else mu_start)

    def both(ch: _Chunk, sl: slice) -> tuple[np.ndarray, ...]:
        cond = fit_batch(lik, ch, theta0[sl], fixed=_held(toys, True), max_iter=50)
        start = np.c_[np.full(len(cond.theta), first_mu), cond.theta[:, 1:]]
        glob = fit_batch(lik, ch, start, max_iter=50)
        return cond.theta, cond.nll, cond.converged, glob.theta, glob.nll, glob.converged

    out = _per_chunk(toys, chunk, both)
    return _result(toys, *out[:3]), _result(toys, *out[3:])


def profile_t(toys: BatchedToys, mu: float, mu_start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``t_mu = 2 (NLL(mu, u_hat_mu) - NLL_min)`` of every toy (:func:`profile_fits`), and a
    flag for failed fits (on a window edge that is no bound, or not converged)."""
    cond, glob = profile_fits(toys, mu, mu_start)
    return 2 * (cond.nll - np.minimum(glob.nll, cond.nll)), cond.failed | glob.failed


def intervals(toys: BatchedToys, glob: FitResult, q: float = 1.0, iterations: int = 30,
              chunk: int = _TOYS_PER_CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Profile-likelihood interval ``{mu: t_mu <= q}`` of every toy around its global fit
    ``glob`` (``q = 1``: 68.3%, ``3.84``: 95%) by :func:`~hsbi.inference.toys.wilks_intervals`
    (edges where ``|t - q| < 1e-3``: within ``5e-4 / sqrt(q)`` of the POI's error): ``low (B,)``, ``high
    (B,)``, and ``ok (B,)`` (the global fit and both edges converged with no nuisance on an edge
    of the window that is not one of its bounds)."""
    lik, level = SurrogateLikelihood.of(toys), float(chi2.cdf(q, 1))
    start = np.c_[glob.mu, glob.u]

    def edges(ch: _Chunk, sl: slice) -> tuple[np.ndarray, ...]:
        out, theta = wilks_intervals(lik, ch, level, start[sl], iterations=iterations, tol=1e-3, edge_theta=True)
        off = toys.window.off_window(np.nan_to_num(theta[:, :, 1:]).reshape(-1, toys.n_nuisances))
        return out[:, 0], out[:, 1], np.isfinite(out).all(-1) & ~off.reshape(-1, 2).any(-1)

    low, high, ok = _per_chunk(toys, chunk, edges)
    return low, high, ok & ~glob.failed
