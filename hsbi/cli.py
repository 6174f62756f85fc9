"""The ``hsbi`` command line: ``hsbi store ls|show|verify|gc|reproduce``."""

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.fn(Store(args.store), args)
    except HSBIError as err:
        print(f"hsbi: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
