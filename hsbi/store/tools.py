"""Store maintenance: listing, provenance trees, verification, garbage collection, reproduction."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hsbi.exceptions import CorruptArtifactError, StoreError
from hsbi.store.lock import GUARD_NAME, lease_is_held
from hsbi.store.store import MANIFEST_NAME, Store

__all__ = [
    "FileComparison",
    "compare_artifacts",
    "gc_plan",
    "input_addresses",
    "provenance_tree",
    "reproduce",
    "run_timing",
    "verify_all",
]


def input_addresses(manifest: Mapping[str, Any]) -> list[str]:
    """The addresses an artifact was made from, flattened."""
    inputs = manifest.get("inputs", {})
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    out: list[str] = []
    for value in values:
        out += value if isinstance(value, list) else [value]
    return out


def provenance_tree(store: Store, address: str, indent: str = "") -> Iterator[str]:
    """Lines describing an artifact and, recursively, its inputs."""
    family = store.find(address)
    m = store.manifest(family, address)
    took = f" in {m['seconds']:g} s" if "seconds" in m else ""
    yield f"{indent}{family}/{address}  created {m.get('created')}{took} on {m.get('host')}"
    yield f"{indent}  code {m.get('code_version')}  packages " + ", ".join(
        f"{k} {v}" for k, v in sorted(m.get("packages", {}).items())
    )
    yield f"{indent}  params {json.dumps(m.get('params'), sort_keys=True)}"
    for addr in input_addresses(m):
        yield from provenance_tree(store, addr, indent + "    ")


def run_timing(store: Store, addresses: Iterable[str]) -> dict[str, Any]:
    """How long the artifacts ``addresses`` and everything upstream of them took to make.

    Returns ``artifacts`` (how many), ``seconds`` (the sum of their production times, from the
    manifests' ``seconds``; ``timed`` says how many manifests have one), ``per_family``
    (``{family: [count, seconds]}``), ``first_started`` and ``last_created`` (ISO times) and
    ``span_seconds`` between them: with one worker and every artifact made by one cold ``law run``,
    the span is that run's wall time up to its last step. Upstream addresses this store does not
    hold (a scratch store with only the direct inputs) are counted in ``not_in_store``."""
    seen: dict[str, dict[str, Any]] = {}
    missing: set[str] = set()
    frontier = list(addresses)
    while frontier:
        address = frontier.pop()
        if address in seen or address in missing:
            continue
        try:
            family = store.find(address)
        except StoreError:  # e.g. a scratch store holding only the direct inputs (reproduce)
            missing.add(address)
            continue
        seen[address] = m = {"family": family, **store.manifest(family, address)}
        frontier += input_addresses(m)
    per_family: dict[str, list[float]] = {}
    for m in seen.values():
        entry = per_family.setdefault(m["family"], [0, 0.0])
        entry[0] += 1
        entry[1] = round(entry[1] + float(m.get("seconds", 0.0)), 1)
    starts = [_dt.datetime.fromisoformat(m.get("started") or m["created"]) for m in seen.values()]
    ends = [_dt.datetime.fromisoformat(m["created"]) for m in seen.values()]
    return {
        "artifacts": len(seen),
        "not_in_store": len(missing),
        "timed": sum("seconds" in m for m in seen.values()),
        "seconds": round(sum(float(m.get("seconds", 0.0)) for m in seen.values()), 1),
        "per_family": dict(sorted(per_family.items(), key=lambda kv: -kv[1][1])),
        "first_started": min(starts).isoformat() if starts else None,
        "last_created": max(ends).isoformat() if ends else None,
        "span_seconds": (max(ends) - min(starts)).total_seconds() if starts else 0.0,
    }


def verify_all(store: Store, addresses: Iterable[str] | None = None) -> list[tuple[str, str | None]]:
    """``(name, error or None)`` for every artifact (or the given addresses)."""
    pairs = (
        [(store.find(a), a) for a in addresses] if addresses is not None else list(store.artifacts())
    )
    results = []
    for family, address in pairs:
        try:
            store.open(family, address)
            results.append((f"{family}/{address}", None))
        except StoreError as err:
            results.append((f"{family}/{address}", str(err)))
    return results


@dataclass(frozen=True)
class GCPlan:
    keep: frozenset[tuple[str, str]]
    remove: tuple[tuple[str, str], ...]
    debris: tuple[Path, ...]
    bytes_freed: int
    corrupt: tuple[tuple[str, str], ...] = ()  # manifest unreadable: removed with the rest
    incomplete: tuple[tuple[str, str], ...] = ()  # directories without a manifest


#: Scratch and lock debris younger than this (newest file) is left alone.
DEBRIS_SECONDS = 3600.0


def _newest_mtime(path: Path) -> float:
    times = [path.lstat().st_mtime]
    for sub in path.rglob("*") if path.is_dir() else ():
        with contextlib.suppress(OSError):
            times.append(sub.lstat().st_mtime)
    return max(times)


def _scratch_in_use(store: Store, path: Path) -> bool:
    """A scratch directory ``<family>-<address>-<id>`` whose producer still holds its lease."""
    family, _, rest = path.name.partition("-")
    address = rest.rpartition("-")[0]
    try:
        return lease_is_held(store.lease_path(family, address))
    except StoreError:  # not a producer's scratch (trash-..., fetch-...)
        return False


def _debris(store: Store) -> list[Path]:
    """Scratch whose producer's lease is gone and lock files, untouched for DEBRIS_SECONDS."""
    debris: list[Path] = []
    for sub in (".tmp", ".locks"):
        folder = store.local / sub
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if path.name == GUARD_NAME or (sub == ".tmp" and _scratch_in_use(store, path)):
                continue
            with contextlib.suppress(OSError):
                if time.time() - _newest_mtime(path) > DEBRIS_SECONDS:
                    debris.append(path)
    return debris


def _manifests(store: Store, pairs: Iterable[tuple[str, str]]) -> tuple[dict, list]:
    """The readable manifests by address, and the artifacts whose manifest is corrupt."""
    manifests, corrupt = {}, []
    for family, address in pairs:
        try:
            manifests[address] = (family, store.manifest(family, address))
        except CorruptArtifactError:
            corrupt.append((family, address))
    return manifests, corrupt


def gc_plan(store: Store, roots: Iterable[str] = (), keep_recent_days: float = 7.0) -> GCPlan:
    """What to keep (reachable from ``roots`` or from artifacts younger than
    ``keep_recent_days``) and what to remove; artifacts with a corrupt manifest, directories
    without one, and stale scratch and lock files are removed too. A root that is not an artifact
    in the store raises :class:`StoreError` (a typo must not make everything unreachable)."""
    roots = list(roots)
    for root in roots:
        try:
            store.find(root)
        except StoreError as err:
            raise StoreError(f"gc --keep {root}: {err}; nothing was removed") from None
    manifests, corrupt = _manifests(store, store.artifacts())
    cutoff = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=keep_recent_days)
    frontier = roots + [a for a, (_, m) in manifests.items()
                        if m.get("created") and _dt.datetime.fromisoformat(m["created"]) >= cutoff]
    keep: set[tuple[str, str]] = set()
    while frontier:
        address = frontier.pop()
        if address not in manifests or (manifests[address][0], address) in keep:
            continue
        keep.add((manifests[address][0], address))
        frontier += input_addresses(manifests[address][1])
    remove = tuple((f, a) for a, (f, _) in manifests.items() if (f, a) not in keep)
    freed = sum(sum(x["size"] for x in manifests[a][1].get("files", {}).values()) for _, a in remove)
    debris = _debris(store) if not store.remote or store.local.exists() else []
    return GCPlan(frozenset(keep), remove, tuple(debris), freed, tuple(corrupt), tuple(store.incomplete()))


def apply_gc(store: Store, plan: GCPlan) -> None:
    for family, address in (*plan.remove, *plan.corrupt, *plan.incomplete):
        store.remove(family, address)
    for path in plan.debris:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


@dataclass(frozen=True)
class FileComparison:
    name: str
    status: str  # "identical", "within tolerance", "run record" (volatile: not compared), "differs", "missing"
    detail: str = ""


def _numbers(obj: Any) -> Iterator[Any]:
    if isinstance(obj, Mapping):
        for key in sorted(obj):
            yield key
            yield from _numbers(obj[key])
    elif isinstance(obj, list):
        for item in obj:
            yield from _numbers(item)
    else:
        yield obj


def _close(a: Path, b: Path, rtol: float, atol: float) -> tuple[bool, str]:
    suffix = a.suffix
    if suffix == ".npz":
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            if sorted(x.files) != sorted(y.files):
                return False, "different arrays"
            worst = max((float(np.max(np.abs(x[k] - y[k]), initial=0)) for k in x.files), default=0)
            return all(np.allclose(x[k], y[k], rtol=rtol, atol=atol) for k in x.files), f"max |diff| {worst:.3g}"
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        x, y = load_file(str(a)), load_file(str(b))
        if sorted(x) != sorted(y):
            return False, "different tensors"
        worst = max((float(np.max(np.abs(x[k] - y[k]), initial=0)) for k in x), default=0)
        return all(np.allclose(x[k], y[k], rtol=rtol, atol=atol) for k in x), f"max |diff| {worst:.3g}"
    if suffix == ".json":
        xa, ya = list(_numbers(json.loads(a.read_text()))), list(_numbers(json.loads(b.read_text())))
        if len(xa) != len(ya):
            return False, "different structure"
        for u, v in zip(xa, ya):
            if isinstance(u, (int, float)) and isinstance(v, (int, float)):
                if not np.isclose(u, v, rtol=rtol, atol=atol):
                    return False, f"{u} vs {v}"
            elif u != v:
                return False, f"{u!r} vs {v!r}"
        return True, "numbers within tolerance"
    return False, "binary file differs"


def compare_artifacts(
    original: Path, other: Path, manifest: Mapping[str, Any], tolerance: Mapping[str, float] | None
) -> list[FileComparison]:
    """Compare files by hash; with a declared tolerance (``rtol``, ``atol``), numerically where
    hashes differ. Files the declaration names ``volatile`` record the run itself (times, say):
    they must be there but are not compared."""
    new_manifest = json.loads((other / MANIFEST_NAME).read_text())
    volatile = set((tolerance or {}).get("volatile", ()))
    numeric = bool(tolerance) and any(k in tolerance for k in ("rtol", "atol"))
    out = []
    for name, meta in sorted(manifest["files"].items()):
        new = new_manifest["files"].get(name)
        if new is None:
            out.append(FileComparison(name, "missing"))
        elif name in volatile:
            out.append(FileComparison(name, "run record", "not compared: it records the run"))
        elif new["sha256"] == meta["sha256"]:
            out.append(FileComparison(name, "identical"))
        elif numeric:
            ok, detail = _close(original / name, other / name, tolerance.get("rtol", 0), tolerance.get("atol", 0))
            out.append(FileComparison(name, "within tolerance" if ok else "differs", detail))
        else:
            out.append(FileComparison(name, "differs", "sha256 differs (bitwise reproducibility declared)"))
    return out


@dataclass(frozen=True)
class Reproduction:
    family: str
    address: str
    new_address: str
    files: list[FileComparison] = field(default_factory=list)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    log: str = ""

    @property
    def match(self) -> bool:
        return self.address == self.new_address and all(
            f.status in ("identical", "within tolerance", "run record") for f in self.files
        )


def reproduce(store: Store, address: str, scratch: Path | None = None, law: str = "law") -> Reproduction:
    """Re-run the task that produced ``address`` into a scratch store holding copies of its
    direct inputs, and compare the result with the original."""
    family = store.find(address)
    original = store.open(family, address)
    prov = original.manifest.get("provenance") or {}
    if "config" not in prov or "task" not in prov:
        raise StoreError(f"artifact {family}/{address} records no provenance to re-run it from")
    scratch = Path(scratch or tempfile.mkdtemp(prefix="hsbi-reproduce-"))
    scratch.mkdir(parents=True, exist_ok=True)
    target = Store(scratch / "store")
    for addr in input_addresses(original.manifest):
        fam = store.find(addr)
        src = store.open(fam, addr).path
        shutil.copytree(src, target.path(fam, addr))
    config = scratch / "config.yaml"
    config.write_text(yaml.safe_dump(prov["config"], sort_keys=False))
    cmd = [law, "run", prov["task"], "--config", str(config), *prov.get("args", [])]
    if prov.get("branch") is not None and prov["branch"] >= 0:
        cmd += ["--branch", str(prov["branch"])]
    env = {**os.environ, "HSBI_STORE": str(target.local)}
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise StoreError(f"re-running {prov['task']} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    produced = [a for a in target.addresses(family) if a not in input_addresses(original.manifest)]
    if not produced:
        raise StoreError(f"re-running {prov['task']} produced no {family} artifact")
    new_address = address if address in produced else produced[0]
    tolerance = prov.get("reproducibility")
    files = compare_artifacts(
        original.path, target.open(family, new_address).path, original.manifest,
        tolerance if isinstance(tolerance, Mapping) else None,
    )
    new_manifest = target.manifest(family, new_address)
    changed = {
        key: (original.manifest.get(key), new_manifest.get(key))
        for key in ("code_version", "params", "inputs")
        if original.manifest.get(key) != new_manifest.get(key)
    }
    return Reproduction(family, address, new_address, files, changed, proc.stdout[-2000:])
