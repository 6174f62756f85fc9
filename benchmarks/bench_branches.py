"""Workflow overhead of a >= 1,000-branch TrainRatio against a ~10-branch one of the same shape.

Two declared models are generated (tiny Parquet samples, one config each): the large one with
``--processes`` x (1 nominal + ``--nps`` x 2 directions) x ``--members`` TrainRatio branches
(default 10 x 51 x 2 = 1,020), the baseline with ``--base-processes``/``--base-nps``/
``--base-members`` (default 2 x 5 x 1 = 10). Every (process, NP, direction) has its own sample
name, so each model also has one IngestSamples branch per sample (510 for the default large one);
a process's variation samples of all NPs share one file (the content does not matter here).

For each model, on its own store, three numbers are timed, each in a fresh process:

1. branch map: ``TrainRatio(config=...)`` and ``get_branch_map()`` (create_branch_map), then
   separately the branch tasks (``get_branch_tasks()``) and their outputs (every address);
2. ``law run TrainRatio --config ... --print-status 0`` (and ``1``: with the IngestSamples
   requirement and its branches);
3. a no-op ``law run TrainRatio --config ...`` when every branch is complete; the store must
   hold exactly the same artifacts afterwards (checked).

The outputs are PLACED, NOT TRAINED. The samples are ingested for real (IngestSamples.run, dask
``sync``) and the first ``--train`` branches of each model are trained for real by ``law run``
(their production seconds, from the manifests, are printed for scale: ~1 s a branch once
Lightning is imported, so training all 1,020 would add ~20 minutes to every run of a benchmark
of the workflow overhead). Every other TrainRatio branch is completed by the task's own
``write()`` (the store's writer, at the address the task computes from its inputs, parameters
and code) with only a ``report.json`` saying it was placed. So (3) measures the workflow
overhead only: law start-up, the DAG, addresses and store checks. The placed artifacts are not
loadable networks (FitDeclaredModel would fail on them); the stores are scratch.

    python benchmarks/bench_branches.py [--processes 10 --nps 25 --members 2] [--repeat 2]
        [--workdir DIR] [--out reports/branches] [--before OLD/results.json] [--notes FILE.md]

Writes ``REPORT.md`` and ``results.json`` to ``--out`` (the report as committed: ``--before
reports/branches/results_before.json --notes reports/branches/fixes.md``). About 15 minutes on
2 shared cores, mostly ingesting the 510 samples and writing the 1,018 placed artifacts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import law_bin, law_env

GOAL_S = 5.0  # "a few seconds"
LAW_ARGS = ("--workers", "1", "--poll-interval", "1sec", "--retries", "0")
FEATURES = ("x0", "x1")
SPLIT = {"train": 0.5, "validation": 0.25, "test": 0.25, "seed": 0}


def n_branches(processes: int, nps: int, members: int) -> int:
    return members * processes * (1 + 2 * nps)


def write_model(directory: Path, processes: int, nps: int, members: int, events: int = 60) -> Path:
    """Samples and ``analysis.yaml`` of a declared model: ``processes`` processes in one channel,
    each with ``nps`` normplusshape NPs (own up/down sample names, one shared file per process and
    direction), mu on the first; Asimov data; ``members`` members. Returns the config path."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def sample(name: str, file: str, process: str) -> dict:
        return {"name": name, "process": process, "files": [file], "branches": list(FEATURES),
                "weight": "w", "event_key": ["event"], "split": dict(SPLIT)}

    samples, procs = [], []
    for i in range(processes):
        proc = f"p{i}"
        x = rng.normal(size=(events, len(FEATURES)))
        for tag, shift in (("nominal", 0.0), ("up", 0.1), ("down", -0.1)):
            table = {f: x[:, d] + (shift if d == 0 else 0.0) for d, f in enumerate(FEATURES)}
            table |= {"w": np.ones(events), "event": i * 1_000_000 + np.arange(events)}
            pq.write_table(pa.table(table), directory / f"{proc}_{tag}.parquet")
        samples.append(sample(proc, f"{proc}_nominal.parquet", proc))
        modifiers: list[dict] = [{"name": "mu", "type": "normfactor"}] if i == 0 else []
        for j in range(nps):
            for side in ("up", "down"):
                samples.append(sample(f"{proc}_np{j}_{side}", f"{proc}_{side}.parquet", proc))
            modifiers.append({"name": f"np{j}", "type": "normplusshape",
                              "up": [f"{proc}_np{j}_up"], "down": [f"{proc}_np{j}_down"]})
        procs.append({"name": proc, "samples": [proc], "modifiers": modifiers})
    config = {
        "name": f"bench-branches-{processes}x{nps}x{members}",
        "samples": samples,
        "training": {"members": members, "max_epochs": 1, "batch_size": 32},
        "statmodel": {"poi": "mu", "channels": [
            {"name": "SR", "features": list(FEATURES), "data": "asimov", "processes": procs}]},
    }
    path = directory / "analysis.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=99))
    return path


def manifests(store: Path) -> set[str]:
    return {str(p.parent.relative_to(store)) for p in store.glob("*/*/manifest.json")}


# -- child processes (a fresh interpreter each: nothing cached from the previous step) ---------


def child_ingest(config: str) -> dict:
    """Ingest every sample for real (IngestSamples.run, dask ``sync``)."""
    import logging

    logging.getLogger("law").setLevel(logging.ERROR)  # publish_message outside a worker warns
    from workflows.ingest import IngestSamples

    start, done = time.perf_counter(), 0
    for task in IngestSamples(config=config, dask_scheduler="sync").get_branch_tasks().values():
        if not task.complete():
            task.run()
            done += 1
    return {"ingested": done, "ingest_s": time.perf_counter() - start}


def child_place(config: str) -> dict:
    """Complete every TrainRatio branch not in the store through the task's own write()."""
    from workflows.statmodel import TrainRatio

    start, placed = time.perf_counter(), 0
    for branch, task in TrainRatio(config=config).get_branch_tasks().items():
        if task.complete():
            continue
        with task.write() as out:
            (out / "report.json").write_text(json.dumps({
                "placed_by": "benchmarks/bench_branches.py", "trained": False, "branch": branch,
                "note": "placed through TrainRatio.write() at the task's address to time the "
                        "workflow overhead; not a trained network"}, indent=1) + "\n")
        placed += 1
    return {"placed": placed, "place_s": time.perf_counter() - start}


def child_branch_map(config: str) -> dict:
    """Wall and CPU seconds of: importing the workflow module, the branch map, the branch tasks,
    their outputs (addresses) and the outputs' existence checks."""
    marks = [(time.perf_counter(), time.process_time())]

    def mark() -> None:
        marks.append((time.perf_counter(), time.process_time()))

    from workflows.statmodel import TrainRatio

    mark()
    workflow = TrainRatio(config=config)
    branch_map = workflow.get_branch_map()
    mark()
    tasks = workflow.get_branch_tasks()
    mark()
    outputs = [task.output() for task in tasks.values()]
    mark()
    complete = sum(out.exists() for out in outputs)
    mark()
    out: dict = {"branches": len(branch_map), "complete": complete}
    for i, name in enumerate(("import", "branch_map", "branch_tasks", "addresses", "exists")):
        out[f"{name}_s"] = marks[i + 1][0] - marks[i][0]
        out[f"{name}_cpu_s"] = marks[i + 1][1] - marks[i][1]
    return out


CHILDREN = {"ingest": child_ingest, "place": child_place, "branch-map": child_branch_map}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(kind: str, config: Path, store: Path, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--config", str(config)],
                          check=False, env=law_env(store), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"{kind} on {config} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_law(config: Path, store: Path, *args: str, timeout: float) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system) of one ``law run TrainRatio --config CONFIG ARGS``."""
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([law_bin(), "run", "TrainRatio", "--config", str(config), *args],
                          check=False, env=law_env(store), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"law run TrainRatio {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return seconds, cpu, proc.stdout


# -- the benchmark ---------------------------------------------------------------------------


def measure(name: str, shape: tuple[int, int, int], workdir: Path, args: argparse.Namespace) -> dict:
    config = write_model(workdir / name / "samples", *shape)
    store = workdir / name / "store"
    result: dict = {"name": name, "processes": shape[0], "nps": shape[1], "members": shape[2],
                    "branches": n_branches(*shape)}
    print(f"[{name}] {result['branches']} TrainRatio branches; config {config}", flush=True)
    result["ingest"] = run_child("ingest", config, store, args.timeout)
    print(f"[{name}] ingested {result['ingest']['ingested']} samples ({result['ingest']['ingest_s']:.0f} s)",
          flush=True)
    if args.train:  # the first branches for real, for scale (production seconds from their manifests)
        seconds, _, _ = timed_law(config, store, "--branches", f"0:{args.train}", *LAW_ARGS, timeout=args.timeout)
        trained = [json.loads(p.read_text()) for p in (store / "TrainRatio").glob("*/manifest.json")]
        result["trained"] = {"branches": len(trained), "law_run_s": seconds,
                             "production_s": sorted((m.get("seconds", 0.0) for m in trained), reverse=True)}
        print(f"[{name}] trained {len(trained)} branches for real: law run {seconds:.0f} s, production "
              f"{result['trained']['production_s']} s", flush=True)
    result["place"] = run_child("place", config, store, args.timeout)
    print(f"[{name}] placed {result['place']['placed']} TrainRatio outputs ({result['place']['place_s']:.0f} s)",
          flush=True)
    before = manifests(store)
    runs: dict[str, list] = {"branch_map": [], "status0": [], "status1": [], "noop": []}
    for _ in range(args.repeat):
        runs["branch_map"].append(run_child("branch-map", config, store, args.timeout))
        runs["status0"].append(timed_law(config, store, "--print-status", "0", timeout=args.timeout)[:2])
        runs["status1"].append(timed_law(config, store, "--print-status", "1", timeout=args.timeout)[:2])
        wall, cpu, output = timed_law(config, store, *LAW_ARGS, timeout=args.timeout)
        runs["noop"].append((wall, cpu))
        if manifests(store) != before:
            sys.exit(f"[{name}] the no-op law run changed the store:\n{output[-3000:]}")
    best = min(runs["branch_map"], key=lambda r: r["branch_map_s"] + r["branch_tasks_s"] + r["addresses_s"])
    if best["complete"] != result["branches"]:
        sys.exit(f"[{name}] {best['complete']} of {result['branches']} branches complete after placing")
    result["branch_map"] = best
    for key, label in (("status0", "print_status_0"), ("status1", "print_status_1"), ("noop", "noop_run")):
        wall, cpu = min(runs[key])
        result[f"{label}_s"], result[f"{label}_cpu_s"] = wall, cpu
    result["runs"] = runs
    print(f"[{name}] branch map {best['branch_map_s']:.2f} s, branch tasks {best['branch_tasks_s']:.2f} s, "
          f"addresses {best['addresses_s']:.2f} s; print-status 0 {result['print_status_0_s']:.2f} s, "
          f"1 {result['print_status_1_s']:.2f} s; no-op run {result['noop_run_s']:.2f} s (wall)", flush=True)
    return result


#: (column, key): wall seconds under ``key``, CPU seconds under ``key`` with ``_cpu``
COLUMNS = (
    ("branch map", "branch_map"),
    ("branch tasks", "branch_tasks"),
    ("addresses", "addresses"),
    ("print-status 0", "print_status_0"),
    ("print-status 1", "print_status_1"),
    ("no-op run", "noop_run"),
)


def value(result: dict, key: str, cpu: bool = False) -> float:
    source = result["branch_map"] if key in ("branch_map", "branch_tasks", "addresses") else result
    return source[f"{key}_cpu_s" if cpu else f"{key}_s"]


def table(base: dict, large: dict) -> list[str]:
    lines = ["| model | branches | ingest branches | " + " | ".join(f"{c} s" for c, _ in COLUMNS) + " |",
             "| --- " * (3 + len(COLUMNS)) + "|"]
    for r in (base, large):
        shape = f"{r['name']} ({r['processes']} proc x {r['nps']} NP x {r['members']} mem)"
        cells = [f"{value(r, k):.2f}" + (f" ({value(r, k, True):.2f})" if f"{k}_cpu_s" in r
                                          or f"{k}_cpu_s" in r["branch_map"] else "") for _, k in COLUMNS]
        lines.append(f"| {shape} | {r['branches']} | {r['processes'] * (1 + 2 * r['nps'])} | "
                     + " | ".join(cells) + " |")
    lines.append(f"| ratio large / baseline | {large['branches'] / base['branches']:.0f}x | | "
                 + " | ".join(f"{value(large, k) / max(value(base, k), 1e-9):.1f}" for _, k in COLUMNS) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--nps", type=int, default=25)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--base-processes", type=int, default=2)
    parser.add_argument("--base-nps", type=int, default=2)
    parser.add_argument("--base-members", type=int, default=1)
    parser.add_argument("--train", type=int, default=2, help="branches trained for real, for scale")
    parser.add_argument("--before", type=Path, default=None,
                        help="results.json of a run on earlier code, shown in the report")
    parser.add_argument("--notes", type=Path, default=None,
                        help="a Markdown file appended to the report (e.g. what was fixed)")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs of each timing")
    parser.add_argument("--workdir", type=Path, default=None, help="keep samples and stores here")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "branches")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per step")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.config)))
        return

    subprocess.run([law_bin(), "index", "-q"], env=law_env(ROOT / "store"), cwd=ROOT, check=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hsbi-bench-branches-"))
    start = time.perf_counter()
    try:
        base = measure("baseline", (args.base_processes, args.base_nps, args.base_members), workdir, args)
        large = measure("large", (args.processes, args.nps, args.members), workdir, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = table(base, large)
    print("\n".join(["", *rows]))
    worst = max(value(large, k) for k in ("branch_map", "print_status_0", "noop_run"))
    print(f"\nslowest of branch map / print-status 0 / no-op run at {large['branches']} branches: "
          f"{worst:.2f} s (goal: a few seconds, <= {GOAL_S:.0f} s): {'met' if worst <= GOAL_S else 'NOT met'}")
    meta = {"command": "python benchmarks/bench_branches.py " + " ".join(sys.argv[1:]),
            "commit": _commit(), "cpus": os.cpu_count(), "wall_s": time.perf_counter() - start,
            "goal_s": GOAL_S, "repeat": args.repeat, "baseline": base, "large": large}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(meta, indent=1) + "\n")
    before = json.loads(args.before.read_text()) if args.before else None
    notes = args.notes.read_text() if args.notes else ""
    (args.out / "REPORT.md").write_text(report(meta, rows, before) + (f"\n{notes}" if notes else ""))
    print(f"wrote {args.out / 'REPORT.md'} and results.json")


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
    return (proc.stdout.strip() or "unknown commit") + ("+changes" if dirty.stdout.strip() else "")


def report(meta: dict, rows: list[str], before: dict | None) -> str:
    base, large = meta["baseline"], meta["large"]
    lines = [
        "# Workflow overhead at 1,000+ TrainRatio branches",
        "",
        (f"Command: `{meta['command']}` at {meta['commit']} ({meta['cpus']} CPUs, shared with other work; "
         f"best of {meta['repeat']} runs each; whole benchmark {meta['wall_s'] / 60:.0f} min). Numbers "
         "from `results.json`; wall seconds of each process, interpreter and law start-up included."),
        "",
        ("The TrainRatio outputs were **placed, not trained**: every branch but the first few holds only a "
         "`report.json`, written through the task's own `write()` at the address the task computes (inputs, "
         "parameters, code). The samples were ingested for real. The numbers are the workflow overhead only: "
         "law start-up, branch map, requirements, addresses and store checks."),
    ]
    trained = large.get("trained") or base.get("trained")
    if trained and trained["production_s"]:
        warm = min(trained["production_s"])
        lines += ["", (f"For scale, the first {trained['branches']} branches of the {large['branches']}-branch "
                       "model were trained for real by `law run` (max_epochs 1, 60 events per sample): "
                       f"production {', '.join(f'{s:.1f}' for s in trained['production_s'])} s (the slowest "
                       f"imports Lightning), `law run` {trained['law_run_s']:.0f} s in all. At {warm:.1f} s a "
                       f"branch (training and artifact write), training all {large['branches']} would take "
                       f"~{large['branches'] * warm / 60:.0f} min on every run, for no change in what is "
                       "measured here.")]
    lines += ["", *rows, "",
              ("Columns: *branch map*: `TrainRatio(config=...)` and `get_branch_map()` (config read and "
               "validated, create_branch_map); *branch tasks*: `get_branch_tasks()`; *addresses*: every "
               "branch's `output()` (requirements, their addresses, the code version); these three in one "
               "fresh process. *print-status 0/1*: `law run TrainRatio --config ... --print-status 0` (1: with "
               "the IngestSamples requirement and its branches); *no-op run*: `law run TrainRatio --config ... "
               f"{' '.join(LAW_ARGS)}` on the complete store (checked: the store is unchanged after it). "
               "Cells: wall seconds (CPU seconds, user + system; the cores are shared, so wall > CPU); "
               "ratios of wall seconds."),
              "",
              (f"Goal: a few seconds (<= {meta['goal_s']:.0f} s) each at >= 1,000 branches: branch map "
               f"{value(large, 'branch_map'):.1f} s, print-status {large['print_status_0_s']:.1f} s "
               f"({large['print_status_0_cpu_s']:.1f} s CPU), no-op run {large['noop_run_s']:.1f} s "
               f"({large['noop_run_cpu_s']:.1f} s CPU).")]
    if before:
        b_base, b_large = before["baseline"], before["large"]
        lines += ["", f"## Before the fixes ({before.get('commit', 'earlier code')})", "",
                  (f"`{before['command']}` on the code before the fixes: at {b_large['branches']} branches "
                   f"(not 1,000: each branch task re-read the config, so the cost per branch grows with the "
                   "config, and a 1,020-branch print-status would have taken tens of minutes)."), "",
                  *table(b_base, b_large)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
