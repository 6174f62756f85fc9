"""The default main job: ``law run InferProfileLikelihood`` cold on a fresh store (goal < 25 s),
then warm with every artifact present (goal < 1.5 s, median of 5), one run each.

The warm run's baseline, measured in the same run, is the interpreter starting and importing law
alone (``python -c "import law"``): what any ``law`` command pays. Peak memory of each from
``/usr/bin/time``-style ``resource`` accounting of the child. A last warm run in this process
(through ``law.cli``) lists the heavy modules it imported (none of torch, Lightning, Ray may be).

    python benchmarks/bench_main.py [--store DIR] [--warm 5] [--config FILE]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import law_bin, law_cmd, law_env  # noqa: E402

COLD_GOAL_S, WARM_GOAL_S = 25.0, 1.5
HEAVY = ("torch", "lightning", "ray", "numba", "scipy.special", "scipy.stats", "pandas", "matplotlib", "dask")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``cmd``; exits with its output's tail if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def heavy_modules_of_a_warm_run(store: Path, config: str) -> list[str]:
    """Modules of :data:`HEAVY` imported by a warm run in a fresh interpreter."""
    code = ("import sys; sys.argv = ['law', 'run', 'InferProfileLikelihood'"
            + (f", '--config', {config!r}" if config else "") + "]\n"
            "from law.cli.cli import run\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=law_env(store), cwd=ROOT, capture_output=True, text=True,
                         check=False)
    return [m for m in out.stdout.strip().splitlines()[-1:][0].split(",") if m] if out.stdout.strip() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="store to use (default: a new temporary directory, so the first run is cold)")
    parser.add_argument("--warm", type=int, default=5, help="warm runs (the median is reported)")
    parser.add_argument("--config", default="", help="analysis config (default: the embedded default)")
    args = parser.parse_args()
    store = Path(args.store or tempfile.mkdtemp(prefix="hsbi-bench-main-"))
    env = law_env(store)
    subprocess.run([law_bin(), "index", "-q"], env=env, cwd=ROOT, check=True)
    cmd = law_cmd("InferProfileLikelihood", *(("--config", args.config) if args.config else ()))

    cold, cold_mem = timed(cmd, env)
    warm = [timed(cmd, env) for _ in range(args.warm)]
    base = [timed([sys.executable, "-c", "import law"], env) for _ in range(args.warm)]
    heavy = heavy_modules_of_a_warm_run(store, args.config)
    w = statistics.median(s for s, _ in warm)
    b = statistics.median(s for s, _ in base)
    print(f"store {store}")
    print(f"cold main job: {cold:.1f} s (goal < {COLD_GOAL_S:.0f} s: {'met' if cold < COLD_GOAL_S else 'NOT met'}), "
          f"peak {cold_mem:.0f} MiB")
    print(f"warm run: median {w:.2f} s of {len(warm)} ({', '.join(f'{s:.2f}' for s, _ in warm)}) "
          f"(goal < {WARM_GOAL_S} s: {'met' if w < WARM_GOAL_S else 'NOT met'}); baseline `import law` "
          f"{b:.2f} s, ratio {w / b:.2f}; heavy modules imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
