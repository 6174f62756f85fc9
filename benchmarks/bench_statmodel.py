"""Speed of the declared model's fits: batched toy fits against iminuit and against the same
batched fits on the derivatives' tensor expressions (``reference=True``, the code before the
fused kernels), and an observed fit with impacts. One run, ratios measured side by side (the
workflow's overhead at 1,000+ branches: ``bench_branches.py``).

Baselines on the same toys: MIGRAD alone (strategy 1) from the same start with the same analytic
gradient, one toy at a time (``--minuit`` toys); the batched Newton fit on the tensor
expressions (``--reference`` toys).

Synthetic per-event terms (no networks): 3 processes, ``P`` NPs of which two thirds are
normplusshape (per-event log ratios ~ N(0, 0.1)) and one third normsys, plus mu and lumi;
~1,000-event toys thrown by the model (``hsbi.inference.toys``: yields, pool reweighting,
global observables drawn), a normalisation sample of ``--norm-events`` per process.

    python benchmarks/bench_statmodel.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hsbi.config.statmodel import (
    ChannelConfig,
    ModifierConfig,
    ParameterConfig,
    ProcessConfig,
    StatModelConfig,
)
from hsbi.inference.batched_fit import fit_batch
from hsbi.inference.fitting import DeclaredLikelihood, _minuit, fit, impacts
from hsbi.inference.statmodel import Dataset, Normalisation, compile_model
from hsbi.inference.toys import PoolChannel, ToyPool, t_statistic

PROCESSES = ("signal", "bkg1", "bkg2")
YIELDS = {"signal": 100.0, "bkg1": 500.0, "bkg2": 400.0}


def synthetic(n_np: int, n_norm: int, seed: int = 0) -> tuple[DeclaredLikelihood, callable]:
    """A likelihood with ``n_np`` NPs and a function making ``B`` toys of ~1,000 events."""
    rng = np.random.default_rng(seed)
    n_shape = (2 * n_np) // 3
    mods = {p: [ModifierConfig("lumi", "lumi")] for p in PROCESSES}
    mods["signal"].insert(0, ModifierConfig("mu", "normfactor"))
    for m in range(n_np):
        proc = PROCESSES[m % 3]
        if m < n_shape:
            mods[proc].append(ModifierConfig(f"np{m}", "normplusshape", up=(f"{proc}_np{m}_up",),
                                             down=(f"{proc}_np{m}_down",)))
        else:
            mods[proc].append(ModifierConfig(f"np{m}", "normsys", lo=0.95, hi=1.05))
    cfg = StatModelConfig(poi="mu", channels=(ChannelConfig("SR", ("x",), "asimov", tuple(
        ProcessConfig(p, (p,), tuple(mods[p])) for p in PROCESSES)),),
        parameters=(ParameterConfig("mu", bounds=(0.0, 10.0)),))
    ratios = {("SR", p, mod.name): (0.97, 1.03) for p in PROCESSES for mod in mods[p] if mod.type == "normplusshape"}
    model = compile_model(cfg, {("SR", p): YIELDS[p] for p in PROCESSES}, ratios)
    ch = model.channels[0]
    C, S = ch.shape_mask.shape

    def shapes(n: int) -> tuple[np.ndarray, np.ndarray]:
        g = rng.normal(0, 0.1, (n, C, S)) * ch.shape_mask
        return -g - 0.005 * ch.shape_mask, g - 0.005 * ch.shape_mask

    norm_terms = [shapes(n_norm) for _ in range(C)]
    norm = Normalisation.of([np.ones(n_norm)] * C, [t[0][:, c] for c, t in enumerate(norm_terms)],
                            [t[1][:, c] for c, t in enumerate(norm_terms)])
    lik = DeclaredLikelihood(model, (norm,))
    # toys of the model itself (hsbi.inference.toys): a pool of events per process with their
    # terms, reweighted by the shape factors; the nominal log ratios favour the own process
    n_pool = 3000
    own = np.repeat(np.arange(C), n_pool)
    logp = rng.normal(0, 0.5, (C * n_pool, C)) + 0.5 * np.eye(C)[own]
    lo, hi = shapes(C * n_pool)
    pool = ToyPool((PoolChannel.of([np.ones(n_pool)] * C, logp, lo, hi),))

    def toys(B: int) -> Dataset:
        return pool.throw(lik, np.tile(model.init, (B, 1)), rng)

    return lik, toys


def bench_toys(n_np: int, n_norm: int, batch: int, n_minuit: int, n_reference: int) -> dict:
    lik, toys = synthetic(n_np, n_norm)
    data = toys(batch)
    start = np.tile(lik.model.init, (batch, 1))
    fit_batch(lik, data.take(torch.arange(2)), start[:2])  # warm-up: the kernels load from numba's cache
    t0 = time.perf_counter()
    res = fit_batch(lik, data, start)  # a fresh batch: its per-process event layout made once inside
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_batch(lik, data, start)  # the same batch again (layout made): the fits alone
    t_again = time.perf_counter() - t0
    # t(mu) of fresh toys, as belts and coverage run them: the global and the conditional fit of
    # each toy (one layout per batch for both)
    more = toys(batch)
    t0 = time.perf_counter()
    t_statistic(lik, more, 1.0, start)
    t_tmu = time.perf_counter() - t0
    # the baseline: MIGRAD alone from the same start, with the same analytic gradient
    t0 = time.perf_counter()
    diffs = []
    for b in range(n_minuit):
        m, _ = _minuit(lik, data.take(torch.tensor([b])), start[b], {})
        m.strategy = 1
        m.migrad()
        diffs.append(res.nll[b] - m.fval)
    t_minuit = (time.perf_counter() - t0) / n_minuit
    rows = torch.arange(n_reference)
    t0 = time.perf_counter()
    ref = fit_batch(lik, data.take(rows), start[:n_reference], reference=True)
    t_ref = (time.perf_counter() - t0) / n_reference
    assert np.allclose(ref.nll, res.nll[:n_reference], rtol=0, atol=1e-6)
    return {"nps": n_np, "batched_fits_per_s": batch / t_batch, "fits_alone_per_s": batch / t_again,
            "t_mu_fits_per_s": 2 * batch / t_tmu, "minuit_fits_per_s": 1 / t_minuit,
            "ratio": t_minuit * batch / t_batch, "converged": int(res.converged.sum()), "batch": batch,
            "tensor_expressions_fits_per_s": 1 / t_ref, "ratio_to_tensor_expressions": t_ref * batch / t_batch,
            "nll_batched_minus_minuit_max": float(np.max(diffs))}


def bench_observed(n_np: int, n_norm: int) -> dict:
    lik, toys = synthetic(n_np, n_norm, seed=1)
    data = toys(1)
    fit(lik, data, hesse=False)  # warm-up
    t0 = time.perf_counter()
    best = fit(lik, data)
    t_fit = time.perf_counter() - t0
    ranked = impacts(lik, data, best)
    return {"nps": n_np, "fit_s": t_fit, "fit_and_impacts_s": time.perf_counter() - t0,
            "impacts": len(ranked), "calls": best.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norm-events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--minuit", type=int, default=4)
    parser.add_argument("--reference", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="numba threads (the fused kernels)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import numba

    numba.set_num_threads(args.threads)
    print({"norm_events": args.norm_events, "batch": args.batch, "numba_threads": args.threads}, flush=True)
    for n_np in (10, 20, 50):
        print(bench_toys(n_np, args.norm_events, args.batch, args.minuit, args.reference), flush=True)
    print(bench_observed(50, args.norm_events), flush=True)


if __name__ == "__main__":
    main()
