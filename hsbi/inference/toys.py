"""Toys of the declared model, the profile-likelihood test statistic of many datasets at once,
and its Neyman critical values.

Toys are thrown from the model, not from a simulator: per channel and process ``c`` the count is
``n_c ~ Poisson(nu_c(theta))`` (the model's yield, code-4 interpolated), and the events are drawn
with replacement from a pool of held-out MC events of ``c`` (the test split, never used in
training) with probability ``w_i * prod_m I4(alpha_m; r_cm^-(x_i), r_cm^+(x_i))``: the nominal
MC reweighted by the learned shape factors to ``p_c(x | alpha)``. The global observables are
drawn around ``theta`` (``a_m ~ N(alpha_m, 1)``, ``a_lumi ~ N(lumi, sigma)``). Every pool event's
per-event terms (all processes' ratios and shape ratios) are computed once; a toy is a set of
indices into them, so throwing and fitting thousands of toys evaluates no network.

The test statistic is ``t(mu) = 2 (NLL(mu, theta_hat_hat) - NLL(theta_hat))`` with both fits
batched (:func:`hsbi.inference.batched_fit.fit_batch`); a fit that does not converge gives
``t = +inf``, which counts against the point (conservative) and is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from hsbi.inference.batched_fit import fit_batch
from hsbi.inference.statmodel import (
    DTYPE,
    ChannelEvents,
    ChannelModel,
    Dataset,
    process_yields,
)

if TYPE_CHECKING:  # fitting imports batched_fit: no import of it at run time
    from hsbi.inference.fitting import Likelihood

__all__ = ["Belt", "PoolChannel", "TStatistic", "ToyPool", "concat", "coverage", "critical_value", "draw_events",
           "neyman_belt",
           "t_statistic", "toy_t", "wilks_intervals"]


@dataclass(frozen=True)
class PoolChannel:
    """Held-out MC events of every process of one channel with their per-event terms.

    ``events`` holds the terms of all ``N`` pool events as one dataset (batch 1); ``process``
    (N,) the process each event belongs to (grouped by process); ``share`` (N,) its weight
    over its process's total."""

    events: ChannelEvents
    process: np.ndarray
    share: np.ndarray
    #: (N,) the sign of each event's weight where the pool has negative weights (None: none)
    sign: np.ndarray | None = None

    @classmethod
    def of(cls, weights: Sequence[np.ndarray], logp: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> PoolChannel:
        """``weights`` per process (their events in that order, concatenated in ``logp`` (N, C)
        and ``lo``/``hi`` (N, C, S)). Signed weights (NLO MC) are resampled by their magnitude
        with their signs kept (``share`` is ``|w|`` over its process's total ``|w|``); each
        process's total weight must be positive."""
        process = np.concatenate([np.full(len(w), c) for c, w in enumerate(weights)])
        for c, w in enumerate(weights):
            if len(w) and not (np.isfinite(w).all() and w.sum() > 0):
                raise ValueError(f"toy pool of process {c}: expected finite weights with a positive total")
        w_all = np.concatenate([np.asarray(w, dtype=float) for w in weights]) if len(process) else np.zeros(0)
        share = np.concatenate([np.abs(w) / np.abs(w).sum() if len(w) else w for w in weights]).astype(float)
        sign = np.where(w_all < 0, -1.0, 1.0) if (w_all < 0).any() else None
        return cls(ChannelEvents.of(np.ones((1, len(process))), logp[None], lo[None], hi[None]), process, share, sign)


@dataclass(frozen=True)
class ToyPool:
    """The pools of every channel of a model; :meth:`throw` makes toys."""

    channels: tuple[PoolChannel, ...]

    def throw(self, lik: Likelihood, theta: np.ndarray, rng: np.random.Generator) -> Dataset:
        """One toy per row of ``theta`` (B, P): counts, events and global observables (see the
        module docstring). Rows are padded with zero-weight events to a common length."""
        model = lik.model
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        t = torch.as_tensor(theta, dtype=DTYPE)
        channels = [_throw_channel(ch, pool, t, rng) for ch, pool in zip(model.channels, self.channels)]
        sig = model.sigmas
        aux = np.where(np.isfinite(sig), theta + np.nan_to_num(sig) * rng.standard_normal(theta.shape), np.nan)
        return Dataset(tuple(channels), torch.as_tensor(aux, dtype=DTYPE))

    def throw_channel(self, lik: Likelihood, channel: int, theta: np.ndarray, rng: np.random.Generator
                      ) -> ChannelEvents:
        """The events of one toy (batch 1) of channel ``channel`` at ``theta`` (P,), as
        :meth:`throw` makes them (an observed ``toy`` dataset: its global observables stay
        nominal)."""
        t = torch.as_tensor(np.asarray(theta, dtype=float)[None], dtype=DTYPE)
        return _throw_channel(lik.model.channels[channel], self.channels[channel], t, rng)


def _throw_channel(ch: ChannelModel, pool: PoolChannel, theta: torch.Tensor, rng: np.random.Generator) -> ChannelEvents:
    from hsbi.inference.kernels import gather_events

    idx, w = draw_events(ch, pool, theta, rng)
    ev, rows = pool.events, torch.as_tensor(idx)
    out = ChannelEvents(torch.as_tensor(w, dtype=DTYPE), ev.logp[0][rows], ev.lo[0][rows], ev.hi[0][rows],
                        ev.coef[0][rows])
    # the fused kernels' layout gathered from the pool's (a few MB) instead of compacting the
    # toys' dense terms (~2 MB a toy)
    own, counts = ch.own_shapes
    out.set_kernel_arrays(own, gather_events(idx, w, *pool.events.kernel_arrays(own, counts)[1:]))
    return out


def draw_events(ch: ChannelModel, pool: PoolChannel, theta: torch.Tensor, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Pool indices (B, n_max) and weights (1, or 0 for padding) of one toy per row of ``theta``:
    Poisson counts of the model's yields, events of each process drawn with replacement with
    probability ``share_i * prod_s I4(alpha_s; r^-(x_i), r^+(x_i))`` of its own shape NPs.

    A pool with signed weights draws by the magnitudes and gives each event its weight's sign
    (+-1), with counts of ``nu_c * sum |u| / sum u`` (``u`` the reweighted weights), so that the
    toy's expected sum of weights is ``nu_c`` in every region."""
    B = theta.shape[0]
    F, logG = process_yields(ch, theta)
    nu = (F * torch.exp(logG)).numpy()  # (B, C)
    if len(ch.shape_index):  # each event's own process's shape NPs, on the pool's kernel layout
        from hsbi.inference.kernels import pool_log_factors

        own, n_own = ch.own_shapes
        starts = np.searchsorted(pool.process, np.arange(len(ch.processes) + 1))
        logf = pool_log_factors(theta.numpy()[:, ch.shape_index], starts, own, n_own,
                                *pool.events.kernel_arrays(own, n_own)[2:])  # (B, N)
    else:
        logf = np.zeros((B, len(pool.process)))
    if pool.sign is not None:  # magnitude over signed sum of the reweighted weights, per toy and process
        for c in range(len(ch.processes)):
            members = np.nonzero(pool.process == c)[0]
            if len(members):
                lp = logf[:, members] + np.log(pool.share[members])
                u = np.exp(lp - lp.max(1, keepdims=True))
                nu[:, c] *= u.sum(1) / (u * pool.sign[members]).sum(1)
    counts = rng.poisson(nu)  # (B, C)
    idx = np.zeros((B, max(int(counts.sum(1).max()), 1)), dtype=np.int64)
    w = np.zeros(idx.shape)
    filled = np.zeros(B, dtype=np.int64)
    for c in range(len(ch.processes)):
        members = np.nonzero(pool.process == c)[0]
        if counts[:, c].any() and len(members) == 0:
            raise ValueError(f"toy pool of channel {ch.name!r} has no events of process {ch.processes[c]!r}")
        log_share = np.log(pool.share[members])
        for b in np.nonzero(counts[:, c])[0]:
            k, lp = counts[b, c], logf[b, members] + log_share
            p = np.exp(lp - lp.max())
            idx[b, filled[b]:filled[b] + k] = members[rng.choice(len(members), k, p=p / p.sum())]
            w[b, filled[b]:filled[b] + k] = 1.0 if pool.sign is None else pool.sign[idx[b, filled[b]:filled[b] + k]]
            filled[b] += k
    return idx, w


def concat(datasets: Sequence[Dataset]) -> Dataset:
    """One batch of several (padding every channel to the longest dataset)."""
    def pad(t: torch.Tensor, n: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, [0, 0] * (t.dim() - 2) + [0, n - t.shape[1]])

    channels = []
    for k in range(len(datasets[0].channels)):
        parts = [d.channels[k] for d in datasets]
        n = max(p.w.shape[1] for p in parts)
        channels.append(ChannelEvents(*(torch.cat([pad(getattr(p, f), n) for p in parts]) for f in
                                        ("w", "logp", "lo", "hi", "coef"))))
    return Dataset(tuple(channels), torch.cat([d.aux for d in datasets]))


@dataclass(frozen=True)
class TStatistic:
    """``t(mu)`` of a batch of datasets (B,), with the global and conditional MLEs (B, P) and
    which fits failed (``t`` is +inf there)."""

    t: np.ndarray
    theta_hat: np.ndarray
    theta_hat_hat: np.ndarray
    failed: np.ndarray


def t_statistic(lik: Likelihood, data: Dataset, mu: float, start: np.ndarray | None = None,
                chunk: int = 64) -> TStatistic:
    """``t(mu)`` for each dataset of ``data``: the global fit from ``start`` (B, P; default the
    model's inits with the POI at ``mu``), then the fit with the POI fixed at ``mu`` from the
    global MLE. Fitted in chunks of ``chunk`` datasets."""
    model = lik.model
    B, P, k = data.batch, len(model.names), model.poi_index
    if start is None:
        start = np.tile(model.point({model.poi: mu}), (B, 1))
    fixed = np.zeros(P, bool)
    fixed[k] = True
    out = {name: [] for name in ("t", "g", "c", "failed")}
    for lo in range(0, B, chunk):
        rows = torch.arange(lo, min(B, lo + chunk))
        sub = data if B <= chunk else data.take(rows)  # no copy of a batch that is one chunk
        glob = fit_batch(lik, sub, start[rows.numpy()])
        cstart = glob.theta.copy()
        cstart[:, k] = mu
        cond = fit_batch(lik, sub, cstart, fixed=fixed)
        t = np.maximum(2 * (cond.nll - glob.nll), 0.0)
        failed = ~(glob.converged & cond.converged)
        out["t"].append(np.where(failed, np.inf, t))
        out["g"].append(glob.theta), out["c"].append(cond.theta), out["failed"].append(failed)
    return TStatistic(*(np.concatenate(out[n]) for n in ("t", "g", "c", "failed")))


def wilks_intervals(lik: Likelihood, data: Dataset, level: float, start: np.ndarray | None = None,
                    iterations: int = 20, tol: float = 1e-3, edge_theta: bool = False
                    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The asymptotic (Wilks) interval of the POI at ``level`` for each dataset of ``data``,
    ``(low, high)`` (B, 2), where ``t(mu)`` crosses the chi2(1) quantile ``q``: batched fits of
    all datasets at once, MINOS's answer without its one-at-a-time fits. From the global fit
    (from ``start``, default the inits) each edge starts at ``mu_hat +- sigma sqrt(q)`` (the
    analytic Hessian's ``sigma``) and moves by the secant of ``sqrt(t)`` (linear in ``mu`` for a
    parabolic ``t``) until ``|t - q| < tol``; an edge beyond a bound of the POI whose ``t``
    stays below ``q`` there is the bound. NaN where a fit failed or an edge did not converge.
    With ``edge_theta`` also the conditional MLEs at the edges, ``(B, 2, P)`` (NaN where none)."""
    from hsbi.inference.fitting import wilks_threshold

    model = lik.model
    B, k = data.batch, model.poi_index
    q = wilks_threshold(level)
    start = np.tile(model.init, (B, 1)) if start is None else start
    glob = fit_batch(lik, data, start)
    hold = np.array([p.fixed for p in model.parameters])
    _, _, H = lik.nll_grad_hess(data, glob.theta)
    free = ~hold
    cov = np.linalg.pinv(np.asarray(H)[:, free][:, :, free])
    sigma = np.sqrt(np.clip(cov[:, int(np.sum(free[:k])), int(np.sum(free[:k]))], 1e-300, None))
    lo_b, hi_b = model.parameters[k].bounds
    fixed = hold.copy()
    fixed[k] = True
    mu_hat = glob.theta[:, k]
    out = np.full((B, 2), np.nan)
    at_edges = np.full((B, 2, len(model.names)), np.nan)
    for side, col in ((-1.0, 0), (1.0, 1)):
        theta = glob.theta.copy()
        todo = glob.converged.copy()
        mu = np.clip(mu_hat + side * sigma * np.sqrt(q), lo_b, hi_b)  # the parabola's edge first
        prev = np.stack([mu_hat, np.zeros(B)], -1)  # the last point (mu, sqrt t): the minimum
        for _ in range(iterations):
            rows = np.nonzero(todo)[0]
            if len(rows) == 0:
                break
            cstart = theta[rows].copy()
            cstart[:, k] = mu[rows]
            cond = fit_batch(lik, data.take(torch.as_tensor(rows)), cstart, fixed=fixed)
            r = np.sqrt(np.maximum(2 * (cond.nll - glob.nll[rows]), 0.0))
            theta[rows] = cond.theta
            at_bound = (mu[rows] == (lo_b if side < 0 else hi_b)) & (r * r <= q)
            done = cond.converged & ((np.abs(r * r - q) < tol) | at_bound)
            out[rows[done], col] = mu[rows[done]]
            at_edges[rows[done], col] = cond.theta[done]
            todo[rows[done | ~cond.converged]] = False
            # the secant of sqrt(t) through the last two points (linear in mu for a parabolic t,
            # and converging where t is not: at a bound, mu_hat on it), else twice the step
            with np.errstate(divide="ignore", invalid="ignore"):  # rows that are done: no step
                slope = (r - prev[rows, 1]) / (mu[rows] - prev[rows, 0])
                secant = mu[rows] + (np.sqrt(q) - r) / np.where(side * slope > 0, slope, np.nan)
            step = mu[rows] - mu_hat[rows]
            new = np.where(np.isfinite(secant), secant, mu_hat[rows] + 2 * step)
            prev[rows] = np.stack([mu[rows], r], -1)
            mu[rows] = np.clip(new, lo_b, hi_b)
    return (out, at_edges) if edge_theta else out


def critical_value(t: np.ndarray, level: float) -> float:
    """The ``level`` quantile of toy ``t`` values (failed toys are +inf: they raise it)."""
    t = np.sort(np.asarray(t, dtype=float))
    j = int(np.ceil(level * len(t))) - 1
    return float(t[min(max(j, 0), len(t) - 1)])


def toy_t(lik: Likelihood, pool: ToyPool, theta: np.ndarray, n: int, seed: int, chunk: int = 64,
          log: Callable[[str], None] | None = None) -> TStatistic:
    """``t(mu)`` of ``n`` toys thrown at ``theta`` (P,), ``mu`` its POI: each toy is fitted
    from the point it was thrown at."""
    rng = np.random.default_rng(seed)
    mu = float(theta[lik.model.poi_index])
    parts = []
    for k, start in enumerate(range(0, n, chunk)):
        # thrown chunk by chunk as they are fitted (the fits draw no random numbers): one chunk
        # of per-event terms in memory, not all n toys (~1 MB a toy at 1,000 events)
        toys = pool.throw(lik, np.tile(theta, (min(chunk, n - start), 1)), rng)
        parts.append(t_statistic(lik, toys, mu, np.tile(theta, (toys.batch, 1)), chunk))
        if log:
            log(f"toys at {lik.model.poi} = {mu:.4g}: {min(n, (k + 1) * chunk)}/{n}")
    return TStatistic(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                        ("t", "theta_hat", "theta_hat_hat", "failed")))


@dataclass(frozen=True)
class Belt:
    """A Neyman construction on a grid of the POI: observed ``t``, the toys' critical values
    per level, failed toys per point; :meth:`interval` reads the accepted region."""

    grid: np.ndarray  # (K,)
    t_observed: np.ndarray  # (K,)
    critical: dict[float, np.ndarray]  # level -> (K,)
    failed: np.ndarray  # (K,) toys counted as t = +inf
    toys: int

    def interval(self, level: float) -> tuple[float, float, bool]:
        """The accepted region ``t_obs(mu) <= t_c(mu)``: its edges interpolated linearly in
        ``t_obs - t_c`` between the last accepted and first rejected grid points, and whether
        the grid truncates it (an end point accepted: the edge is that end)."""
        # a failed observed fit (t = +inf) rejects its point; an infinite critical value (more
        # failed toys than the level leaves out) accepts it
        with np.errstate(invalid="ignore"):
            d = np.where(np.isfinite(self.t_observed), self.t_observed - self.critical[level], np.inf)
        ok = np.nonzero(d <= 0)[0]
        if len(ok) == 0:
            return math.nan, math.nan, False
        g = self.grid

        def edge(inside: int, outside: int) -> float:
            if not (np.isfinite(d[outside]) and np.isfinite(d[inside])):
                return float(g[inside])
            return float(g[inside] + (g[outside] - g[inside]) * d[inside] / (d[inside] - d[outside]))
        lo = float(g[0]) if ok[0] == 0 else edge(ok[0], ok[0] - 1)
        hi = float(g[-1]) if ok[-1] == len(g) - 1 else edge(ok[-1], ok[-1] + 1)
        return lo, hi, bool(ok[0] == 0 or ok[-1] == len(g) - 1)


def neyman_belt(lik: Likelihood, pool: ToyPool, data: Dataset, grid: Sequence[float], toys: int,
                levels: Sequence[float], seed: int, log: Callable[[str], None] | None = None) -> Belt:
    """The profile construction for one observed dataset: at each ``mu`` of ``grid`` toys are
    thrown at the observed conditional MLE ``theta_hat_hat(mu)`` of all NPs (global observables
    drawn around it), their ``t(mu)`` gives the critical values."""
    grid = np.asarray(grid, dtype=float)
    t_obs, crit, failed = [], {lv: [] for lv in levels}, []
    for k, mu in enumerate(grid):
        obs = t_statistic(lik, data, float(mu))
        t_obs.append(obs.t[0])
        ref = toy_t(lik, pool, obs.theta_hat_hat[0], toys, seed + k)
        for lv in levels:
            crit[lv].append(critical_value(ref.t, lv))
        failed.append(int(ref.failed.sum()))
        if log:
            log(f"belt point {k + 1}/{len(grid)}: {lik.model.poi} = {mu:.4g}, t_obs = {obs.t[0]:.3f}, "
                + ", ".join(f"t_c({lv:g}) = {crit[lv][-1]:.3f}" for lv in levels))
    return Belt(grid, np.array(t_obs), {lv: np.array(v) for lv, v in crit.items()}, np.array(failed), toys)


def coverage(t_datasets: np.ndarray, t_reference: np.ndarray, level: float) -> dict:
    """Coverage of ``level`` at one point: the fraction of datasets whose ``t`` is within the
    critical value of the reference toys, with its binomial error counting the reference
    quantile's own (``sqrt(p (1 - p) (1/N + 1/N_ref))``), and the Wilks coverage beside it."""
    from scipy import stats

    tc = critical_value(t_reference, level)
    n, n_ref = len(t_datasets), len(t_reference)
    p = float(np.mean(t_datasets <= tc))
    err = math.sqrt(level * (1 - level) * (1 / n + 1 / n_ref))
    wilks = float(np.mean(t_datasets <= stats.chi2.ppf(level, 1)))
    return {"level": level, "coverage": p, "error": err, "pull": (p - level) / err, "critical_value": tc,
            "wilks_coverage": wilks, "wilks_error": math.sqrt(level * (1 - level) / n), "datasets": n,
            "reference_toys": n_ref, "failed_datasets": int(np.sum(~np.isfinite(t_datasets))),
            "failed_reference": int(np.sum(~np.isfinite(t_reference)))}
