"""Validation report: trained LRE ensembles against the exact Gaussian-rotation likelihood.

For r = 2 and r = 0.5 (arXiv:2503.07962) at mu in {0.1, 0.2, 0.3} x z in {0.15, 0.25, 0.35} pi:

* expected (Asimov) Wilks interval widths of the ensemble and of the exact likelihood;
* coverage of the Neyman construction at the truth on ``--toys`` datasets: ``t_mu`` of each
  dataset against the critical value from as many independent toys at the same point (the ideal
  profile construction), and of the Wilks interval, with binomial errors. The error of a Neyman
  coverage estimate combines the datasets' and the reference toys' binomial terms,
  ``sqrt(p (1 - p) (1 / N + 1 / N_ref))``; the goal is ``|coverage - CL| < 2`` such errors.

Toys are Poisson resamplings of per-process pools simulated at the point (``pool_toys``), fitted
by the batched Newton fitter for both densities. The ensembles are the default DAG's
``TrainEstimator`` at each radius, trained (or reused) in ``$HSBI_STORE`` through a real
``law run``. Writes ``REPORT.md`` and ``validation.png`` to ``--out``.

    python benchmarks/validate_inference.py --out reports/validation   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from hsbi.config import load_config
from hsbi.inference import asymptotic_interval, fit_observed, likelihood_from_config
from hsbi.inference.analysis import ASIMOV_POINTS_2D, POOL_WINDOW_SIGMAS, toy_seed
from hsbi.inference.asimov import asimov_dataset
from hsbi.inference.batched import batched_t, pool_toys
from hsbi.inference.profile import quantile_with_failed

RADII = (2.0, 0.5)
MUS = (0.1, 0.2, 0.3)
ZS = (0.15, 0.25, 0.35)  # in units of pi
LEVELS = (0.6827, 0.95)
WIDTH_GOAL = 0.05  # |width_ensemble / width_exact - 1| at r = 2
#: training per radius: at r = 0.5 the densities depend weakly on z, and the default 60k events
#: and 12 epochs give a z-biased ensemble (Asimov z_hat 0.09 at z = 0.47); more data and epochs
TRAINING = {0.5: ("simulation.n_train=240000", "training.max_epochs=24")}


def trained_ensemble(radius: float, members: int):
    """The default DAG's ensemble at ``radius``: trained (or reused) by a real ``law run``."""
    from workflows.tasks import TrainEstimator
    from hsbi.estimators import load_ensemble

    overrides = (f"model.radius={radius}", f"training.members={members}", *TRAINING.get(radius, ()))
    subprocess.run(["law", "run", "TrainEstimator", "--set", ",".join(overrides)], check=True,
                   stdout=subprocess.DEVNULL)
    task = TrainEstimator(set=overrides)
    return load_ensemble([b.artifact().path for b in task.get_branch_tasks().values()])


def coverage(t: np.ndarray, t_ref: np.ndarray, level: float) -> dict:
    """Neyman and Wilks coverage at ``level`` with binomial errors; failed fits (NaN) count as
    ``t = +inf``: a dataset not covered, a reference toy above the critical value."""
    crit = quantile_with_failed(t_ref, level)
    t = np.where(np.isnan(t), np.inf, t)
    neyman, wilks = float(np.mean(t < crit)), float(np.mean(t < chi2.ppf(level, 1)))
    err = np.sqrt(level * (1 - level) * (1 / len(t) + 1 / len(t_ref)))
    return {"neyman": neyman, "neyman_error": float(err), "wilks": wilks,
            "wilks_error": float(np.sqrt(wilks * (1 - wilks) / len(t))), "critical": crit,
            "pull": float((neyman - level) / err)}


def validate_point(densities: dict, model, lik, mu: float, z: float, n_expected: float, toys: int,
                   seed: int) -> dict:
    """Asimov widths and coverage at one point for each density."""
    asimov = asimov_dataset(model, mu, z, n_expected, points=ASIMOV_POINTS_2D)
    out = {}
    for name, density in densities.items():
        fit = fit_observed(density, lik, asimov, points=121)
        widths = {f"{cl:g}": (lambda iv: iv.high - iv.low)(asymptotic_interval(fit, cl)) for cl in LEVELS}
        half = POOL_WINDOW_SIGMAS * max(fit.sigma_nuisance, 1e-3)
        t_sets = []
        for k in range(2):  # datasets, then the independent reference toys
            prepared = pool_toys(density, lik, model, mu, z, n_expected, toys, toy_seed(seed + k, mu + z), half)
            t, edge = batched_t(prepared, mu)
            t[edge] = np.nan
            t_sets.append(t)
        out[name] = {
            "widths": widths,
            "failed": int(sum(np.isnan(t).sum() for t in t_sets)),
            "coverage": {f"{cl:g}": coverage(*t_sets, cl) for cl in LEVELS},
        }
    return out


def _summary(points: dict) -> list[str]:
    """Per density: the pulls' chi2 over all points and levels (ndf = their number: each pull is
    N(0, 1) if the coverage is nominal), how many exceed 2, failed fits, and the width ratios."""
    out = []
    for name in ("lre", "exact"):
        pulls = np.array([p[name]["coverage"][cl]["pull"] for p in points.values() for cl in ("0.6827", "0.95")])
        out.append(f"- {name}: coverage pulls chi2 {np.sum(pulls**2):.1f} for ndf {len(pulls)}, "
                   f"{int(np.sum(np.abs(pulls) > 2))} beyond 2 (expected {0.0455 * len(pulls):.1f}), "
                   f"failed fits {sum(p[name]['failed'] for p in points.values())}")
    ratios = [p["lre"]["widths"][cl] / p["exact"]["widths"][cl] for p in points.values() for cl in ("0.6827", "0.95")]
    out.append(f"- width ratio lre / exact: {min(ratios):.3f} to {max(ratios):.3f}")
    return out


def report(results: dict, out: Path, toys: int, seconds: float) -> None:
    lines = [
        "# Validation against the exact Gaussian-rotation likelihood", "",
        f"Generated by `python benchmarks/validate_inference.py` in {seconds / 60:.1f} min; "
        f"{toys} datasets and {toys} reference toys per point and density (pooled toys, batched fits).",
        "Widths: expected (Asimov) Wilks intervals; ratio = ensemble / exact. Neyman coverage: "
        "critical value from the reference toys; pull = (coverage - CL) / error, error = "
        "sqrt(CL(1-CL)(1/N + 1/N_ref)). Goal: |pull| < 2; at r = 2 |ratio - 1| < 5%.", "",
    ]
    for radius, points in results.items():
        lines += [f"## r = {radius}", "",
                  "| mu | z/pi | width 68% exact | ratio 68% | ratio 95% | Neyman 68% (lre / exact) "
                  "| pull | Neyman 95% (lre / exact) | pull | Wilks 68% lre | failed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, p in points.items():
            lre, ex = p["lre"], p["exact"]
            ratio = {cl: lre["widths"][cl] / ex["widths"][cl] for cl in ("0.6827", "0.95")}
            c = {cl: (lre["coverage"][cl], ex["coverage"][cl]) for cl in ("0.6827", "0.95")}
            mu, zpi = key.split("/")
            lines.append(
                f"| {mu} | {zpi} | {ex['widths']['0.6827']:.4f} | {ratio['0.6827']:.3f} | {ratio['0.95']:.3f} "
                f"| {c['0.6827'][0]['neyman']:.3f} / {c['0.6827'][1]['neyman']:.3f} "
                f"| {c['0.6827'][0]['pull']:+.1f} / {c['0.6827'][1]['pull']:+.1f} "
                f"| {c['0.95'][0]['neyman']:.3f} / {c['0.95'][1]['neyman']:.3f} "
                f"| {c['0.95'][0]['pull']:+.1f} / {c['0.95'][1]['pull']:+.1f} "
                f"| {c['0.6827'][0]['wilks']:.3f} | {lre['failed']} / {ex['failed']} |")
        lines += ["", *_summary(points), ""]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    (out / "validation.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "validation.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r_i, (radius, points) in enumerate(results.items()):
        keys = list(points)
        xs = np.arange(len(keys)) + 0.15 * r_i
        ratio = [points[k]["lre"]["widths"]["0.6827"] / points[k]["exact"]["widths"]["0.6827"] for k in keys]
        axes[0].plot(xs, ratio, "o", label=f"r = {radius}")
        for cl, marker in (("0.6827", "o"), ("0.95", "s")):
            cov = [points[k]["lre"]["coverage"][cl] for k in keys]
            axes[1].errorbar(xs, [c["neyman"] for c in cov], [c["neyman_error"] for c in cov], fmt=marker,
                             label=f"r = {radius}, {float(cl):.1%}")
        axes[0].set_xticks(np.arange(len(keys)), keys, rotation=60, fontsize=7)
        axes[1].set_xticks(np.arange(len(keys)), keys, rotation=60, fontsize=7)
    axes[0].axhspan(1 - WIDTH_GOAL, 1 + WIDTH_GOAL, color="0.9")
    axes[0].set(ylabel="68% width: LRE ensemble / exact", xlabel="mu / (z/pi)")
    for cl in LEVELS:
        axes[1].axhline(cl, color="0.5", lw=0.8)
    axes[1].set(ylabel="Neyman coverage (LRE ensemble)", xlabel="mu / (z/pi)")
    axes[0].legend(), axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/validation"))
    parser.add_argument("--toys", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--radii", type=float, nargs="+", default=list(RADII))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start, results = time.perf_counter(), {}
    for radius in args.radii:
        cfg = load_config("default", [f"model.radius={radius}", *TRAINING.get(radius, ())])
        model, inf = cfg.model.build(), cfg.inference
        lik = likelihood_from_config(inf, model)
        densities = {"lre": trained_ensemble(radius, args.members), "exact": model}
        results[str(radius)] = {}
        for mu in MUS:
            for zpi in ZS:
                res = validate_point(densities, model, lik, mu, zpi * np.pi, inf.n_expected, args.toys,
                                     inf.neyman.seed)
                results[str(radius)][f"{mu:g}/{zpi:g}"] = res
                c = res["lre"]["coverage"]["0.6827"]
                print(f"r={radius} mu={mu} z={zpi}pi: width ratio "
                      f"{res['lre']['widths']['0.6827'] / res['exact']['widths']['0.6827']:.3f}, "
                      f"Neyman 68% {c['neyman']:.3f} ({c['pull']:+.1f} sigma)", flush=True)
    report(results, args.out, args.toys, time.perf_counter() - start)
    print(f"report: {args.out / 'REPORT.md'}")


if __name__ == "__main__":
    main()
