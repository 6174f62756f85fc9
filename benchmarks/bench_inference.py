"""Ensemble evaluation FLOP rate against a dense matmul; toy profile fits per second: batched
Newton, the windowed grid fitter and a per-toy (mu, z) grid scan, on the same toys."""

from __future__ import annotations

import time

import numpy as np
import torch

from hsbi.config import load_config
from hsbi.estimators import LREEnsemble, RatioNet
from hsbi.inference import make_likelihood, throw_toys, toy_statistics
from hsbi.inference.analysis import TOY_WINDOW_POINTS, TOY_WINDOW_SIGMAS
from hsbi.inference.batched import batched_t, prepare_toys


def timed(fn, repeat: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
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
    toys = throw_toys(model, 0.2, np.pi / 4, inf.n_expected, inf.constraint_sigma, 400, seed=1)
    sigma_z = 0.015
    ten = LREEnsemble([
        {p: RatioNet(2, cfg.estimator.widths, cfg.estimator.activation).eval() for p in model.processes}
        for _ in range(10)
    ])
    for name, density in (("exact", model), ("10-member lre ensemble", ten)):
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
        few = toys[:10]
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


if __name__ == "__main__":
    main()
