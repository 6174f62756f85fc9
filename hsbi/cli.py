"""The ``hsbi`` command line: ``hsbi store ls|show|verify|gc|reproduce`` and ``hsbi fit WORKSPACE...``."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Sequence

from hsbi.exceptions import CorruptArtifactError, HSBIError
from hsbi.store import MANIFEST_NAME, Store
from hsbi.store.tools import apply_gc, gc_plan, provenance_tree, reproduce, verify_all

__all__ = ["main"]

_NO_MANIFEST = f"no {MANIFEST_NAME} (never a valid artifact; `hsbi store gc --delete` removes it)"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _age(created: str | None) -> str:
    if not created:
        return "?"
    seconds = (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(created)).total_seconds()
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"


def cmd_ls(store: Store, args: argparse.Namespace) -> int:
    rows = [(f, a) for f, a in store.artifacts() if not args.family or f == args.family]
    print(f"{'task':<24} {'address':<26} {'size':>9} {'age':>7}")
    for family, address in rows:
        try:
            m = store.manifest(family, address)
        except CorruptArtifactError as err:
            print(f"CORRUPT  {err}")
            continue
        print(f"{family:<24} {address:<26} {_size(store.size(family, address)):>9} {_age(m.get('created')):>7}")
    for family, address in store.incomplete():
        if not args.family or family == args.family:
            print(f"INCOMPLETE  {family}/{address}: {_NO_MANIFEST}")
    print(f"{len(rows)} artifacts in {store.url}")
    return 0


def cmd_show(store: Store, args: argparse.Namespace) -> int:
    for line in provenance_tree(store, args.address):
        print(line)
    return 0


def cmd_verify(store: Store, args: argparse.Namespace) -> int:
    if not args.all and not args.addresses:
        raise HSBIError("name addresses to verify, or --all")
    results = verify_all(store, None if args.all else args.addresses)
    for name, error in results:
        print(f"ok       {name}" if error is None else f"CORRUPT  {error}")
    incomplete = store.incomplete() if args.all else []
    for family, address in incomplete:
        print(f"INCOMPLETE  {family}/{address}: {_NO_MANIFEST}")
    bad = sum(error is not None for _, error in results)
    print(f"{len(results) - bad} ok, {bad} corrupt" + (f", {len(incomplete)} incomplete" if incomplete else ""))
    return 1 if bad or incomplete else 0


def cmd_gc(store: Store, args: argparse.Namespace) -> int:
    plan = gc_plan(store, args.keep, args.keep_recent_days)
    verb = "removing" if args.delete else "would remove"
    for family, address in plan.remove:
        print(f"{verb} {family}/{address}")
    for kind, pairs in (("corrupt", plan.corrupt), ("incomplete", plan.incomplete)):
        for family, address in pairs:
            print(f"{verb} {kind} {family}/{address}")
    for path in plan.debris:
        print(f"{verb} debris {path.name}")
    done = "removed" if args.delete else "to remove"
    damaged = len(plan.corrupt) + len(plan.incomplete)
    print(f"{len(plan.keep)} kept, {len(plan.remove) + damaged} {done} ({_size(plan.bytes_freed)})"
          + ("" if args.delete else "; dry run, pass --delete to remove"))
    if args.delete:
        apply_gc(store, plan)
    return 0


def cmd_reproduce(store: Store, args: argparse.Namespace) -> int:
    result = reproduce(store, args.address, args.scratch)
    if result.new_address != result.address:
        print(f"address differs: {result.address} -> {result.new_address}")
        for key, (old, new) in result.changed.items():
            print(f"  {key}: {old} -> {new}")
    for f in result.files:
        print(f"{f.status:<17} {f.name}  {f.detail}")
    print(f"{result.family}/{result.address}: {'MATCH' if result.match else 'MISMATCH'}")
    return 0 if result.match else 1


def _format_fit(result: dict) -> list[str]:
    """The fit of a workspace as text: parameters with errors, intervals of the POI, impacts."""
    poi = result["poi"]
    lines = [f"{'parameter':<20} {'best fit':>12} {'error':>10}"]
    lines += [f"{name:<20} {result['best_fit'][name]:>12.6g} {result['errors'][name]:>10.4g}"
              for name in result["parameters"]]
    for level, (lo, hi) in result["intervals"]["minos"].items():
        valid = "" if result["intervals"]["minos_valid"][level] else "  (MINOS: not valid)"
        lines.append(f"{poi} {level}% CL (MINOS): [{lo:.6g}, {hi:.6g}]{valid}")
    if result["impacts"]:
        lines.append(f"{'impact on ' + poi:<20} {'pull':>8} {'constraint':>10} {'post-fit +/-':>24}")
        lines += [f"{i['name']:<20} {i['pull']:>8.3f} {i['constraint']:>10.3f} "
                  f"{i['postfit'][0]:>+12.4g}{i['postfit'][1]:>+12.4g}" for i in result["impacts"]]
    lines.append(f"fit valid: {result['valid']}; NLL at the minimum {result['nll_min']:.10g}")
    return lines


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a portable workspace (no torch, Lightning or Ray imported)."""
    import json
    from pathlib import Path

    from hsbi.inference.combined import fit_combination, is_hsbi_workspace
    from hsbi.inference.workspace import fit_workspace

    log = (lambda _: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    if len(args.workspace) == 1 and is_hsbi_workspace(args.workspace[0]):
        result = fit_workspace(args.workspace[0], log=log)
    else:
        result = fit_combination(args.workspace, log=log)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        from hsbi.plotting.statmodel import plot_fit

        plot_fit(out, result)  # pulls.png, scan.png, correlation.png
    print(json.dumps(result, indent=1) if args.json else "\n".join(_format_fit(result)))
    return 0 if result["valid"] else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsbi", description=__doc__)
    parser.add_argument("--store", default=None, help="store path or URL; default: $HSBI_STORE")
    sub = parser.add_subparsers(dest="group", required=True)
    store = sub.add_parser("store", help="inspect and maintain the artifact store")
    cmds = store.add_subparsers(dest="command", required=True)
    ls = cmds.add_parser("ls", help="list artifacts with task, size and age")
    ls.add_argument("--family", help="only this task family")
    ls.set_defaults(fn=cmd_ls)
    show = cmds.add_parser("show", help="provenance tree of an artifact")
    show.add_argument("address")
    show.set_defaults(fn=cmd_show)
    verify = cmds.add_parser("verify", help="check artifacts against their manifests")
    verify.add_argument("addresses", nargs="*")
    verify.add_argument("--all", action="store_true", help="verify every artifact")
    verify.set_defaults(fn=cmd_verify)
    gc = cmds.add_parser("gc", help="remove what is unreachable from roots and recent runs")
    gc.add_argument("--keep", nargs="*", default=[], help="root addresses to keep (with inputs)")
    gc.add_argument("--keep-recent-days", type=float, default=7.0,
                    help="also keep artifacts younger than this, with their inputs; default: 7")
    gc.add_argument("--delete", action="store_true", help="really delete (default: dry run)")
    gc.set_defaults(fn=cmd_gc)
    rep = cmds.add_parser("reproduce", help="re-run the producing task and compare content")
    rep.add_argument("address")
    rep.add_argument("--scratch", default=None, help="scratch directory; default: a temp dir")
    rep.set_defaults(fn=cmd_reproduce)
    fit = sub.add_parser("fit", help="fit portable workspaces (ExportWorkspace, ExportPyhf) without the training "
                         "stack; several are combined, parameters shared by name")
    fit.add_argument("workspace", nargs="+", help="an hsbi workspace (directory or workspace.json) or a pyhf "
                     "workspace JSON; several: their combination")
    fit.add_argument("--out", default=None, help="also write result.json, pulls.png, scan.png and correlation.png "
                     "into this directory")
    fit.add_argument("--json", action="store_true", help="print the result as JSON")
    fit.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    fit.set_defaults(fn=cmd_fit, needs_store=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not getattr(args, "needs_store", True):
            return args.fn(args)
        return args.fn(Store(args.store), args)
    except HSBIError as err:
        print(f"hsbi: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
