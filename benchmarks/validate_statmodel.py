"""Validation of the declared-model pipeline against the exact many-NP benchmark.

Writes the benchmark's Parquet samples (``hsbi.models.many_np.ManyNP``), runs the real DAG
(``law run FitDeclaredModel``: ingestion, one network per process and per (process, NP,
direction), the observed fit) and compares with the exact likelihood on the same data: mu_hat,
the MINOS intervals (edges in units of the exact width) and the NP best fits (in units of their
unit constraint). Writes ``REPORT.md`` and ``validation.json`` to ``--out``.

    python benchmarks/validate_statmodel.py --out reports/statmodel
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from hsbi.models.many_np import ManyNP

TRUTH = {"mu": 1.0, "shape_0": 0.5, "norm_1": -0.7}
LEVELS = (0.6827, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/statmodel"))
    parser.add_argument("--samples", type=Path, default=Path("data/many_np"))
    parser.add_argument("--events", type=int, default=20000, help="MC events per process")
    parser.add_argument("--set", default="training.max_epochs=20,training.members=1",
                        help="config overrides for the run")
    args = parser.parse_args()
    sim = ManyNP()
    config = sim.write_samples(args.samples, seed=3, n_mc_per_process=args.events, data_params=TRUTH)
    start = time.time()
    cmd = ["law", "run", "FitDeclaredModel", "--config", str(config), "--set", args.set, "--workers", "2"]
    subprocess.run(cmd, check=True)
    wall = time.time() - start
    from hsbi.config.loader import split_overrides
    from workflows.statmodel import FitDeclaredModel

    path = FitDeclaredModel(config=str(config), set=tuple(split_overrides(args.set))).artifact().path
    result = json.loads((path / "result.json").read_text())
    table = pq.read_table(args.samples / "data.parquet")
    x = np.stack([table.column(f).to_numpy() for f in sim.features], -1)
    best, _ = sim.fit(x)
    exact = {f"{100 * lv:.4g}": sim.profile_interval(x, lv) for lv in LEVELS}
    rows, summary = [], {"wall_s": wall, "events": len(x), "mc_per_process": args.events, "set": args.set}
    for key, (lo, hi) in exact.items():
        ours = result["intervals"]["minos"][key]
        width = hi - lo
        rows.append(f"| {key}% | [{ours[0]:.4f}, {ours[1]:.4f}] | [{lo:.4f}, {hi:.4f}] | "
                    f"{(ours[0] - lo) / width:+.3f} | {(ours[1] - hi) / width:+.3f} |")
        summary[key] = {"hsbi": ours, "exact": [lo, hi], "edge_shift_in_widths": [(ours[0] - lo) / width,
                                                                                 (ours[1] - hi) / width]}
    nps = {n: result["best_fit"][n] - best[n] for n in (*sim.shape_nps, *sim.norm_nps)}
    summary["np_difference"] = nps
    summary["mu_hat"] = {"hsbi": result["best_fit"]["mu"], "exact": best["mu"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validation.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        "# Declared model against the exact many-NP benchmark", "",
        f"Command: `python benchmarks/validate_statmodel.py` (`--set {args.set}`, {args.events} MC events per",
        f"process, one dataset of {len(x)} events at {TRUTH}). DAG wall time {wall:.0f} s.", "",
        f"mu_hat: hsbi {result['best_fit']['mu']:.4f}, exact {best['mu']:.4f}.", "",
        "| level | hsbi MINOS | exact | low edge shift / width | high edge shift / width |",
        "| --- | --- | --- | --- | --- |", *rows, "",
        "NP best fits, hsbi - exact (unit constraints, so in units of the pre-fit sigma):", "",
        "| NP | difference |", "| --- | --- |", *(f"| {n} | {d:+.3f} |" for n, d in nps.items()), "",
    ]
    (args.out / "REPORT.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
