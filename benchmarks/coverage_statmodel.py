"""Neyman coverage of the declared model on the exact many-NP benchmark.

Datasets are thrown from the true simulator (``hsbi.models.many_np.ManyNP``) at the truth of
``benchmarks/validate_statmodel.py``, with their global observables drawn; each gets
``t(mu_true)`` from the declared likelihood (batched fits of all 11 parameters). The critical
values come from toys of the *model* at the truth (``hsbi.inference.toys``: the held-out MC
pool reweighted by the shape factors, yields code-4 interpolated), so the coverage tests what a
user's Neyman construction relies on: that the model's toys reproduce the distribution of
``t`` of real data. Two likelihoods on the same datasets and pools:

- ``trained``: the networks of the validation DAG (``law run FitDeclaredModel`` with ``--set``,
  run ``validate_statmodel.py`` first: the networks are read from the store, never retrained);
- ``exact``: the benchmark's exact log densities and shape ratios in the same likelihood (what
  is left is code-4 interpolation and the finite normalisation sample).

Coverage errors count the reference quantile's own: ``sqrt(p (1 - p) (1/N + 1/N_ref))``.

    python benchmarks/coverage_statmodel.py --datasets 500 --reference 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hsbi.models.many_np import ManyNP

TRUTH = {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7}
LEVELS = (0.6827, 0.95)


def exact_evaluator(channel, shape_names: tuple[str, ...]):
    """An evaluator with the benchmark's exact per-event terms instead of networks."""
    from hsbi.inference.declared import Evaluator

    sim = ManyNP()

    class Exact(Evaluator):
        def terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return sim.ratio_terms(x, self.channel.processes, self.shape_names, self.channel.shape_mask)

    return Exact(channel, {}, shape_names)


def likelihoods(config: Path, overrides: str):
    """The trained and the exact likelihood, their toy pools, and the per-channel term makers."""
    from hsbi.config.loader import load_config, split_overrides
    from hsbi.data.statmodel import SampleStore
    from hsbi.inference.declared import build, load_nets, normalisation_samples, toy_pool
    from hsbi.inference.fitting import DeclaredLikelihood
    from workflows.statmodel import FitDeclaredModel, ingested_dirs

    task = FitDeclaredModel(config=str(config), set=tuple(split_overrides(overrides)))
    reqs = task.requires()
    if not reqs["networks"].complete():
        raise SystemExit(f"coverage_statmodel: the networks of {config} with --set {overrides} are not in the "
                         "store; run benchmarks/validate_statmodel.py first")
    dirs = ingested_dirs({k: v for k, v in reqs.items() if k != "networks"})
    members = [(b.branch_data, b.artifact().path) for b in reqs["networks"].get_branch_tasks().values()]
    cfg = load_config(config, split_overrides(overrides))
    store = SampleStore(cfg, dirs)
    trained, evaluators = build(cfg, store, load_nets(members))
    ch = trained.model.channels[0]
    names = tuple(trained.model.names[j] for j in ch.shape_index)
    exact_ev = exact_evaluator(ch, names)  # same model, normalisation sample and pool; exact terms
    exact = DeclaredLikelihood(trained.model, (exact_ev.normalisation(normalisation_samples(cfg, store, 0)),))
    return cfg, store, {"trained": (trained, evaluators[0], toy_pool(cfg, evaluators, store)),
                        "exact": (exact, exact_ev, toy_pool(cfg, (exact_ev,), store))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=Path("data/many_np"))
    parser.add_argument("--set", default="training.max_epochs=30,training.members=1")
    parser.add_argument("--datasets", type=int, default=500)
    parser.add_argument("--reference", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("reports/statmodel"))
    parser.add_argument("--only", choices=("trained", "exact"), help="one likelihood only")
    args = parser.parse_args()
    from hsbi.inference.statmodel import DTYPE, Dataset
    from hsbi.inference.toys import concat, coverage, t_statistic, toy_t

    torch.set_num_threads(1)
    sim = ManyNP()
    start = time.time()
    cfg, _, liks = likelihoods(args.samples / "analysis.yaml", args.set)
    model = liks["trained"][0].model
    truth = model.point(TRUTH)
    rng = np.random.default_rng(args.seed)
    thrown = [sim.sample_toy(rng, TRUTH) for _ in range(args.datasets)]
    summary = {"datasets": args.datasets, "reference_toys": args.reference, "set": args.set, "truth": TRUTH,
               "normalisation_events": cfg.statmodel.normalisation_events}
    if args.only:
        liks = {args.only: liks[args.only]}
    for name, (lik, ev, pool) in liks.items():
        t0 = time.time()
        parts = []
        for x, aux in thrown:
            a = model.nominal_aux.copy()
            for key, value in aux.items():
                a[model.index(key)] = value
            parts.append(Dataset((ev.events(x, np.ones(len(x))),), torch.as_tensor(a[None], dtype=DTYPE)))
        data = concat(parts)
        t_data = t_statistic(lik, data, TRUTH["mu"], np.tile(truth, (data.batch, 1)))
        t_fit = time.time() - t0
        ref = toy_t(lik, pool, truth, args.reference, args.seed + 1, log=print)
        t_all = time.time() - t0
        fits = 2 * (args.datasets + args.reference)
        summary[name] = {"levels": [coverage(t_data.t, ref.t, lv) for lv in LEVELS],
                         "seconds": t_all, "fits": fits, "fits_per_s": fits / t_all,
                         "dataset_fit_seconds": t_fit}
        print(name, json.dumps(summary[name], indent=1), flush=True)
    summary["wall_s"] = time.time() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coverage.json").write_text(json.dumps(summary, indent=1) + "\n")
    rows = [f"| {name} | {c['level']:.4g} | {c['coverage']:.4f} +- {c['error']:.4f} | {c['pull']:+.2f} | "
            f"{c['critical_value']:.3f} | {c['wilks_coverage']:.4f} | {c['failed_datasets']}/{c['failed_reference']} |"
            for name in liks for c in summary[name]["levels"]]
    lines = [
        "# Neyman coverage of the declared model (many-NP benchmark)", "",
        (f"Command: `python benchmarks/coverage_statmodel.py --datasets {args.datasets} --reference {args.reference}`"
         f" (networks of `--set {args.set}`). {args.datasets} datasets from the true simulator at {TRUTH} with"),
        "their global observables drawn; critical values of t(mu = 1) from toys of the model at the truth (held-out MC",
        "reweighted by the shape factors). Error: sqrt(p (1 - p) (1/N + 1/N_ref)).", "",
        "| likelihood | level | coverage | pull | t_c | Wilks coverage | failed fits (data/ref) |",
        "| --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        *(f"{name}: {summary[name]['fits']} fits in {summary[name]['seconds']:.0f} s "
          f"({summary[name]['fits_per_s']:.1f} fits/s, 11 parameters, normalisation sample "
          f"{cfg.statmodel.normalisation_events} events per process)." for name in liks), "",
    ]
    (args.out / "COVERAGE.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
