"""Wall time of a 50-point x 1,000-toy Neyman belt on the default config (goal < 30 s), one run.

On a scratch store (a temporary directory, or ``--store DIR`` to reuse a trained ensemble), the
inputs are made first and not timed: ``law run TrainEstimator`` and ``law run SimulateObserved``.
Then a real ``law run ConfidenceBelt --set inference.neyman.points=50,inference.neyman.toys=1000,
inference.neyman.method=pool,inference.neyman.chunk=...`` is timed (every NeymanToys branch and
the belt), and, as the baseline measured in the same run, the same command once more with all
artifacts present (law start-up, DAG and store checks only).

    python benchmarks/bench_belt.py [--store DIR] [--chunk 1000] [--set training.max_epochs=1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import law_env, run_law  # noqa: E402

GOAL_S = 30.0  # issue 21 (was 120 s before the fast paths)


def timed_law(store: Path, task: str, overrides: list[str]) -> float:
    """Seconds of one ``law run TASK --set ...``; exits with its output's tail if it fails."""
    args = ("--set", ",".join(overrides)) if overrides else ()
    start = time.perf_counter()
    proc = run_law(store, task, *args, timeout=3600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"law run {task} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return seconds


def newest_belt(store: Path) -> dict:
    """The belt.json written last in ``store`` (the one just produced)."""
    path = max((store / "ConfidenceBelt").glob("*/belt.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="store to use (default: a new temporary directory)")
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--toys", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=None, help="toys per branch (default: all toys of a point)")
    parser.add_argument("--method", default="pool", choices=("pool", "simulator"))
    parser.add_argument("--set", dest="extra", default="", help="further overrides, e.g. training.max_epochs=1")
    args = parser.parse_args()
    store = Path(args.store or tempfile.mkdtemp(prefix="hsbi-bench-belt-"))
    extra = [s for s in args.extra.split(",") if s]
    chunk = args.chunk or args.toys
    belt = [f"inference.neyman.points={args.points}", f"inference.neyman.toys={args.toys}",
            f"inference.neyman.method={args.method}", f"inference.neyman.chunk={chunk}", *extra]
    subprocess.run([str(Path(sys.executable).with_name("law")), "index", "-q"], env=law_env(store), cwd=ROOT,
                   check=True)

    t_inputs = timed_law(store, "TrainEstimator", extra) + timed_law(store, "SimulateObserved", extra)
    t_belt = timed_law(store, "ConfidenceBelt", belt)
    t_noop = timed_law(store, "ConfidenceBelt", belt)

    summary = newest_belt(store)
    failed = {name: d["failed_fits"] for name, d in summary["densities"].items()}
    branches = args.points * -(-args.toys // chunk)
    toys = args.points * args.toys * len(failed)
    print(f"store {store}; inputs (training, observed; not timed against the goal): {t_inputs:.1f} s")
    print(f"belt: {args.points} points x {args.toys} {args.method} toys x {len(failed)} densities "
          f"({branches} NeymanToys branches of {chunk} toys), failed fits {failed}")
    print(f"belt wall time {t_belt:.1f} s vs goal {GOAL_S:.0f} s: ratio {t_belt / GOAL_S:.2f} "
          f"({'met' if t_belt < GOAL_S else 'NOT met'}); {toys / t_belt:.0f} toy fits/s")
    print(f"baseline, the same law run with every artifact present: {t_noop:.1f} s "
          f"(belt minus baseline {t_belt - t_noop:.1f} s)")


if __name__ == "__main__":
    main()
