"""Ensemble evaluation FLOP rate against a dense matmul, and Neyman toy fits per second."""

from __future__ import annotations

import time

import numpy as np
import torch

from hsbi.config import load_config
from hsbi.estimators import LREEnsemble, RatioNet
from hsbi.inference import make_likelihood, throw_toys, toy_statistics
from hsbi.inference.analysis import TOY_WINDOW_POINTS, TOY_WINDOW_SIGMAS


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
    toys = throw_toys(model, 0.2, np.pi / 4, inf.n_expected, inf.constraint_sigma, 200, seed=1)
    half = TOY_WINDOW_SIGMAS * 0.015
    for name, density in (("lre ensemble", ens), ("exact", model)):
        dt = timed(lambda d=density: toy_statistics(d, lik, toys, 0.2, np.pi / 4, half,
                                                     model.nuisance_range, points=k), repeat=1)
        print(f"toy profile fits ({name}): {len(toys) / dt:.0f} toys/s "
              f"({inf.n_expected:.0f} events, 1 POI + 1 nuisance, conditional + global fit)")


if __name__ == "__main__":
    main()
