"""Ensemble evaluation FLOP rate against a dense matmul; toy profile fits per second: batched
Newton, the windowed grid fitter and a per-toy (mu, z) grid scan, on the same toys; and for
1 POI + 2 nuisances (the rotation-width model), batched fits and intervals against a per-toy
(mu, z, s) grid scan (arXiv:2503.07962) on the same toys, with the exact density and with a
briefly trained 10-member LRE ensemble."""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import torch

from hsbi.config import load_config
from hsbi.estimators import LREEnsemble, RatioNet
from hsbi.inference import make_likelihood, throw_toys, toy_statistics
from hsbi.inference.analysis import TOY_WINDOW_POINTS, TOY_WINDOW_SIGMAS
from hsbi.inference.batched import batched_t, prepare_toys
from hsbi.inference.batched_nd import Basis, Window, assemble, intervals, pooled_toys, profile_fits
from hsbi.inference.likelihood import parabola_min
from hsbi.models.constraint import Constraint
from hsbi.models.rotation_width import RotationWidth

#: The two-nuisance benchmark: truth, constraint widths, surrogate windows (exact density: ~5
#: posterior sigma of 1,000-event toys, 0.016 rad and 0.018; the untrained ensemble does not
#: constrain the nuisances, so 4 constraint widths), toys, the scan's grids and scanned toys.
TRUTH, SIGMA_AUX = np.array([np.pi / 4, 1.0]), 0.1
WINDOWS = {"exact": (0.08, 0.09), "10-member lre ensemble": (0.4, 0.4)}
N_TOYS, SCAN_POINTS, SCAN_MUS = 4000, 21, np.linspace(0.0, 0.5, 201)
N_SCAN = {"exact": 3, "10-member lre ensemble": 1}


def timed(fn, repeat: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    # one intra-op thread: on shared cores torch's spinning OpenMP workers slow small batched
    # ops down by > 10x (measured here: 137 against 7 fits/s with 2 threads at load 15)
    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    cfg = load_config()
    model = cfg.model.build()
    torch.manual_seed(0)
    members = [
        {p: RatioNet(2, cfg.estimator.widths, cfg.estimator.activation).eval() for p in model.processes}
        for _ in range(cfg.training.members)
    ]
    ens = LREEnsemble(members)
    rows, k = 50_000, TOY_WINDOW_POINTS
    x = np.random.default_rng(0).standard_normal((rows, 2))
    zs = np.linspace(0.6, 0.9, k)
    widths = [3, *cfg.estimator.widths, 1]
    flop_per_row = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:])) * len(members) * 2
    t_eval = timed(lambda: ens.log_components(x, zs))
    ens_rate = flop_per_row * rows * k / t_eval / 1e9
    a = torch.randn(2048, 2048)
    mm_rate = 2 * 2048**3 / timed(lambda: a @ a) / 1e9
    print(f"ensemble evaluation: {ens_rate:.1f} GFLOP/s (matmul {mm_rate:.1f} GFLOP/s), "
          f"ratio {ens_rate / mm_rate:.2f}; {rows * k / t_eval / 1e6:.2f} M rows/s "
          f"({len(members)} members x {len(model.processes)} processes)")

    inf = cfg.inference
    lik = make_likelihood(model, inf.n_expected, inf.constraint_sigma)
    all_toys = throw_toys(model, 0.2, np.pi / 4, inf.n_expected, inf.constraint_sigma, 400, seed=1)
    sigma_z = 0.015
    ten = LREEnsemble([
        {p: RatioNet(2, cfg.estimator.widths, cfg.estimator.activation).eval() for p in model.processes}
        for _ in range(10)
    ])
    # fewer toys for the ensemble (its evaluation dominates) keep the whole script under 3 minutes
    for name, density, n_toys, n_scan in (("exact", model, 400, 10), ("10-member lre ensemble", ten, 100, 3)):
        toys = all_toys[:n_toys]
        t0 = time.perf_counter()
        toy_statistics(density, lik, toys, 0.2, np.pi / 4, TOY_WINDOW_SIGMAS * sigma_z,
                       model.nuisance_range, points=k)
        t_grid = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepared = prepare_toys(density, lik, toys, np.pi / 4, 5 * sigma_z, model.nuisance_range)
        t_prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched_t(prepared, 0.2)
        t_fit = time.perf_counter() - t0
        few = toys[:n_scan]
        t0 = time.perf_counter()
        for toy in few:  # baseline: a (mu, z) grid scan per toy, as in arXiv:2503.07962
            zs = np.linspace(*model.nuisance_range, 51)
            comps = density.log_components(toy.x, zs)
            grid = lik.grid(comps, zs, toy.aux)
            np.min([grid.nll(mu) for mu in np.linspace(0, 1, 101)])
        t_scan = (time.perf_counter() - t0) / len(few) * len(toys)
        fits = 2 * len(toys)  # a conditional and a global fit per toy
        print(f"[{name}] {len(toys)} toys of {inf.n_expected:.0f} events, 1 POI + 1 nuisance: "
              f"batched {fits / t_fit:.0f} fits/s (+ {t_prep:.2f}s surrogate set-up), "
              f"windowed grid {fits / t_grid:.0f} fits/s, per-toy grid scan {fits / t_scan:.1f} fits/s; "
              f"batched total vs scan: {t_scan / (t_fit + t_prep):.0f}x")
    two_nuisances(list(cfg.estimator.widths), cfg.estimator.activation)


def _quadratic_min(values: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> float:
    """Minimum of a grid ``(n1, n2)`` refined by a quadratic surface fitted (least squares) to
    the 3 x 3 neighbourhood of the lowest point (kept inside it)."""
    i, j = np.unravel_index(np.argmin(values), values.shape)
    i, j = min(max(i, 1), len(g1) - 2), min(max(j, 1), len(g2) - 2)
    d1, d2 = (a.ravel() for a in np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij"))
    design = np.c_[np.ones(9), d1, d2, d1**2, d1 * d2, d2**2]
    c = np.linalg.lstsq(design, values[i - 1 : i + 2, j - 1 : j + 2].ravel(), rcond=None)[0]
    hess = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    if np.linalg.eigvalsh(hess)[0] <= 0:
        return float(values.min())
    d = np.clip(-np.linalg.solve(hess, c[1:3]), -1.0, 1.0)
    return float(min(c[0] + c[1:3] @ d + 0.5 * d @ hess @ d, values.min()))


def _crossing(mus: np.ndarray, t: np.ndarray, inside: int, outside: int) -> float:
    """``mu`` where ``t = 1`` between neighbouring grid points ``inside`` (``t < 1``) and
    ``outside``: a parabola through them and the next point out (or in, at the grid's end)."""
    step = outside - inside
    third = outside + step if 0 <= outside + step < len(mus) else inside - step
    pts = [inside, outside, third]
    lo, hi = sorted((mus[inside], mus[outside]))
    roots = np.roots(np.polyfit(mus[pts], t[pts] - 1.0, 2))
    roots = roots[np.isreal(roots)].real
    roots = roots[(roots >= lo - 1e-12) & (roots <= hi + 1e-12)]
    return float(roots[0]) if len(roots) else float(np.interp(1.0, t[[inside, outside]], mus[[inside, outside]]))


def grid_scan(density, model: RotationWidth, x: np.ndarray, aux: np.ndarray, window: Window) -> tuple[float, float]:
    """The per-toy method of arXiv:2503.07962: the estimator on the toy's events over a grid in
    the nuisances (``SCAN_POINTS^2`` over the window), the NLL on ``SCAN_MUS`` x that grid, the
    profile by minimising over the nuisance grid with local quadratic interpolation, and the
    68.3% interval edges from the profile ``t(mu) = 1`` by interpolation."""
    g1, g2 = (np.linspace(c - h, c + h, SCAN_POINTS) for c, h in zip(window.center, window.half_width))
    nu = np.array(list(itertools.product(g1, g2)))  # (K, 2)
    comps = density.log_components(x, nu)  # (K, n, C)
    a, b = model.yield_coefficients(1000, nu)
    mx = comps.max(-1)
    e = np.exp(comps - mx[..., None])
    big_a, big_b = np.einsum("knc,kc->kn", e, a), np.einsum("knc,kc->kn", e, b)
    const = ((nu - aux) ** 2).sum(1) / (2 * SIGMA_AUX**2) - mx.sum(1) + a.sum(1)
    profile = np.array([
        _quadratic_min((const + mu * b.sum(1) - np.log(big_a + mu * big_b).sum(1)).reshape(len(g1), len(g2)), g1, g2)
        for mu in SCAN_MUS
    ])
    mu_hat, nll_min, _ = parabola_min(SCAN_MUS, profile)
    t = 2 * (profile - min(nll_min, profile.min()))
    k_hat = int(np.argmin(t))
    left, right = np.nonzero(t[:k_hat] >= 1.0)[0], k_hat + np.nonzero(t[k_hat:] >= 1.0)[0]
    low = _crossing(SCAN_MUS, t, left[-1] + 1, left[-1]) if len(left) else SCAN_MUS[0]
    high = _crossing(SCAN_MUS, t, right[0] - 1, right[0]) if len(right) else SCAN_MUS[-1]
    return float(low), float(high)


def stopwatch(fn):
    """``fn()``, its wall-clock seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def two_nuisances(widths: list[int], activation: str) -> None:
    """Batched fits and intervals vs. the per-toy grid scan, 1 POI + 2 nuisances (see module).
    Rates per wall-clock second and per CPU second of this process (one thread: the latter is
    what a dedicated core gives; the toys' chunks are independent, so 2 cores give twice it)."""
    model = RotationWidth()
    basis = Basis.total_degree(2, 4)
    torch.manual_seed(0)
    ens = LREEnsemble([{p: RatioNet(2, widths, activation, n_nuisances=2).eval() for p in model.processes}
                       for _ in range(10)])
    print(f"2 nuisances: 10 untrained two-nuisance members ({widths}, {activation}); surrogates: "
          f"{basis.exponents.shape[0]}-term polynomials of total degree 4 fitted on a 5 x 5 Chebyshev grid")
    sampler = lambda r, proc, size: model.sample(r, proc, np.tile(TRUTH, (size, 1)))  # noqa: E731

    def prepare(density, rng, window):
        table, rows, events = pooled_toys(density.log_components, sampler, model.processes,
                                          model.yields(1000, 0.2), N_TOYS, rng, window, basis)
        aux = TRUTH + SIGMA_AUX * rng.standard_normal((N_TOYS, 2))
        toys = assemble(table, rows, [None] * N_TOYS, aux, lambda z: model.yield_coefficients(1000, z),
                        window, basis, model.poi_range, [Constraint("gaussian", SIGMA_AUX)] * 2)
        return toys, events, aux

    for name, density in (("exact", model), ("10-member lre ensemble", ens)):
        rng = np.random.default_rng(7)  # the same toys for both densities
        window, n_scan = Window.clipped(TRUTH, WINDOWS[name], model.nuisance_ranges), N_SCAN[name]
        (toys, events, aux), w_prep, c_prep = stopwatch(lambda: prepare(density, rng, window))
        (_, glob), w_fit, c_fit = stopwatch(lambda: profile_fits(toys, 0.2))
        (low, high, ok), w_int, c_int = stopwatch(lambda: intervals(toys, glob))
        scans, w_scan, c_scan = stopwatch(lambda: np.array(
            [grid_scan(density, model, events[b], aux[b], window) for b in range(n_scan)]))
        w_scan, c_scan = w_scan / n_scan, c_scan / n_scan
        diff = np.max(np.abs(np.c_[low, high][:n_scan] - scans) / (scans[:, 1] - scans[:, 0])[:, None])
        print(f"[{name}] {N_TOYS} pooled toys of 1000 events, 1 POI + 2 nuisances; a fit = a toy's conditional "
              f"+ global fit, timed with the surrogate set-up (simulation of the {toys.c0.shape[0]} pool events, "
              f"their evaluation at {len(basis.nodes)} nodes, the polynomials; window +-{WINDOWS[name]}): batched "
              f"{N_TOYS / (w_prep + w_fit):.0f} fits/s wall, {N_TOYS / (c_prep + c_fit):.0f} per CPU-second "
              f"(goal >= 2000 on 2 cores) [set-up {w_prep:.1f}s, fits {w_fit:.1f}s]; 68.3% intervals "
              f"{N_TOYS / w_int:.0f} toys/s wall, {N_TOYS / c_int:.0f} per CPU-second ({ok.mean():.1%} converged, "
              f"mean width {np.mean(high - low):.4f}); per-toy grid scan ({SCAN_POINTS}x{SCAN_POINTS} nuisances x "
              f"{len(SCAN_MUS)} mu over the window, {n_scan} toys) {1 / w_scan:.2f} fits/s wall, {1 / c_scan:.2f} per CPU-second; "
              f"batched / scan {w_scan * N_TOYS / (w_prep + w_fit):.0f}x wall, "
              f"{c_scan * N_TOYS / (c_prep + c_fit):.0f}x CPU (goal >= 100; with intervals "
              f"{c_scan * N_TOYS / (c_prep + c_fit + c_int):.0f}x CPU); max |edge difference| / width over the "
              f"scanned toys {diff:.4f}" + (" (goal <= 0.01)" if name == "exact" else " (untrained: no goal)"))


if __name__ == "__main__":
    _, wall, cpu = stopwatch(main)
    print(f"total: {wall:.0f}s wall, {cpu:.0f}s CPU (goal < 180s)")
