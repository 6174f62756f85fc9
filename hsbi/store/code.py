"""Code versions: a hash of the project code that makes an artifact, found through its imports.

A reference is ``"pkg.module"`` (the whole module) or ``"pkg.module:Name"`` (one top-level name
and what it uses). Starting from references, the closure follows, statically (``ast``, nothing is
imported), every import of a project module (top-level packages in ``roots``): ``import a.b``,
``from a.b import c``, relative imports and imports inside functions. A name brings in the
statement that defines it and, in turn, the module-level names it refers to; re-exports such as
``from hsbi.estimators import load_combined`` are followed to the submodule that defines the name,
so an edit in an unused submodule of a package does not count. Top-level statements other than
definitions and imports (registries, constants) always count. Sources are hashed as their syntax
tree without docstrings (``ast.dump``): comments, docstrings and layout do not change a version.

Following the closure parses every module it reaches (~0.2 s per task class, most of a warm
``law run``). Code versions are therefore kept on disk (:func:`disk_cache`, ``HSBI_CODE_CACHE``;
empty to switch it off), keyed by the references, the roots, the ``skip``'s ``cache_key`` and a
hash of the path and text of every source file under the roots and of Python's version: any
edit under a root, however small, is a new key, so a cached version is the one the closure would
compute.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

__all__ = [
    "ADDRESS_PACKAGES",
    "clear_code_cache",
    "code_closure",
    "code_version",
    "disk_cache",
    "package_key",
]

#: Libraries whose major.minor version enters every address: they compute the numbers.
ADDRESS_PACKAGES = ("numpy", "scipy", "torch", "lightning", "zuko", "iminuit")

Ref = tuple[str, "str | None"]  # (module, top-level name or None for the whole module)
Skip = Callable[[str, "str | None"], bool]


def _read(path: Path) -> str:
    """The source text of ``path`` (tests replace this to edit a module without touching it)."""
    return path.read_text()


@lru_cache(maxsize=None)
def _module_file(module: str) -> Path | None:
    """The source file of ``module``, found from its top-level package without importing it."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        return None
    if not spec.submodule_search_locations:
        return Path(spec.origin) if not rest and spec.origin.endswith(".py") else None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


#: the fields holding statement lists: docstrings live only in bodies of statements
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
_BLOCK_NODES = (ast.stmt, ast.excepthandler, ast.match_case)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    todo = [tree]  # statements only: defs (and so docstrings) are never inside expressions
    while todo:
        node = todo.pop()
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
        for field in _BLOCKS:
            block = getattr(node, field, None)
            if isinstance(block, list):
                todo.extend(child for child in block if isinstance(child, _BLOCK_NODES))
    return tree


@dataclass(frozen=True)
class _Module:
    """A parsed module: its top-level statements and the names they bind."""

    name: str
    package: str  # the package relative imports start from
    statements: tuple[ast.stmt, ...]
    bindings: dict[str, list[int]]  # name -> statements binding it at the top level
    always: tuple[int, ...]  # statements that always run and count (not defs, not imports)


def _bound_names(stmt: ast.stmt) -> Iterator[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield stmt.name
    elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            yield alias.asname or alias.name.split(".")[0]
    else:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                yield node.id


@lru_cache(maxsize=None)
def _parse(module: str) -> _Module | None:
    path = _module_file(module)
    if path is None:
        return None
    tree = _strip_docstrings(ast.parse(_read(path), filename=str(path)))
    statements = tuple(tree.body)
    bindings: dict[str, list[int]] = {}
    for i, stmt in enumerate(statements):
        for name in _bound_names(stmt):
            bindings.setdefault(name, []).append(i)
    definition = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    always = tuple(i for i, s in enumerate(statements) if not isinstance(s, definition))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _Module(module, package, statements, bindings, always)


def _import_refs(node: ast.Import | ast.ImportFrom, package: str) -> Iterator[tuple[str, Ref]]:
    """``(bound name, reference)`` for each name an import statement binds."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.asname or alias.name.split(".")[0], (alias.name, None)
        return
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        parent = ".".join(parts[: len(parts) - node.level + 1])
        base = f"{parent}.{base}" if base else parent
    for alias in node.names:
        if alias.name == "*":
            yield "*", (base, None)
        else:
            yield alias.asname or alias.name, (base, alias.name)


@lru_cache(maxsize=None)
def _refs_of(module: str, index: int) -> tuple[Ref, ...]:
    """:func:`_statement_refs`, once per statement (task classes share most of their closures)."""
    return tuple(_statement_refs(_parse(module), index))


@lru_cache(maxsize=None)
def _dump(module: str, index: int) -> bytes:
    """What a statement adds to a code version: its syntax tree as text."""
    return ast.dump(_parse(module).statements[index]).encode()


def _statement_refs(mod: _Module, index: int) -> Iterator[Ref]:
    """What a top-level statement uses: module-level names of its own module, and imports inside
    it (a top-level import binds names and is followed only for the names that are used)."""
    stmt = mod.statements[index]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and node.id in mod.bindings:
            yield mod.name, node.id
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from (ref for _, ref in _import_refs(node, mod.package))


def _resolve(mod: _Module, name: str) -> Iterator[tuple[int, Ref | None]]:
    """The statements binding ``name`` in ``mod``, each with the import it follows (if one)."""
    for index in mod.bindings.get(name, ()):
        stmt = mod.statements[index]
        target = None
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            target = next((ref for bound, ref in _import_refs(stmt, mod.package) if bound == name), None)
        yield index, target


def code_closure(refs: Iterable[str], roots: Iterable[str], skip: Skip | None = None) -> dict[str, list[int]]:
    """The top-level statements, per project module, that the references use (see the module
    docstring). ``skip(module, name)`` may exclude a reference (e.g. other tasks, whose results
    enter an address as input addresses)."""
    roots = set(roots)
    included: dict[str, set[int]] = {}
    todo: list[Ref] = [(r.partition(":")[0], r.partition(":")[2] or None) for r in refs]
    seen: set[Ref] = set()
    while todo:
        ref = todo.pop()
        module, name = ref
        if ref in seen or module.split(".")[0] not in roots or (skip is not None and skip(module, name)):
            continue
        seen.add(ref)
        mod = _parse(module)
        if mod is None:  # ``from package import name`` where name is not a module: seen in package
            continue
        new = set()
        if module not in included:
            included[module] = set()
            new |= set(mod.always)
            parent = module.rpartition(".")[0]
            if parent:  # importing a submodule runs its packages' __init__ first
                todo.append((parent, "__init__"))
        if name is None:
            new |= set(range(len(mod.statements)))
        elif name != "__init__":
            resolved = list(_resolve(mod, name))
            if not resolved or name == "*":
                todo.append((f"{module}.{name}", None))  # a submodule
            for index, target in resolved:
                new.add(index)
                if target is not None:
                    todo.append(target)
        for index in sorted(new - included[module]):
            included[module].add(index)
            if isinstance(mod.statements[index], (ast.Import, ast.ImportFrom)) and name is None:
                todo.extend(ref for _, ref in _import_refs(mod.statements[index], mod.package))
            todo.extend(_refs_of(module, index))
    return {m: sorted(ix) for m, ix in included.items() if ix}


def code_version(*refs: str, roots: Iterable[str] = (), skip: Skip | None = None) -> str:
    """A hash (16 hex) of the code the references use: see :func:`code_closure`. ``roots`` are
    the project's top-level packages besides ``hsbi`` and those of ``refs``; ``skip`` must be
    hashable (results are cached per process)."""
    tops = {r.split(":")[0].split(".")[0] for r in refs}
    return _code_version(tuple(refs), frozenset({*roots, *tops, "hsbi"}), skip)


#: at most this many code versions in the disk cache (the oldest go first)
_DISK_ENTRIES = 4096


def disk_cache() -> Path | None:
    """The file code versions are kept in: ``HSBI_CODE_CACHE`` (empty: none), by default
    ``$XDG_CACHE_HOME/hsbi/code-versions.json`` (``~/.cache`` without it)."""
    path = os.environ.get("HSBI_CODE_CACHE")
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "hsbi" / "code-versions.json"
    return Path(path) if path else None


def _root_files(root: str) -> list[Path]:
    """Every source file a closure within ``root`` can reach."""
    top = _module_file(root)
    if top is None:
        return []
    return sorted(top.parent.rglob("*.py")) if top.name == "__init__.py" else [top]


def _disk_key(refs: tuple[str, ...], roots: frozenset[str], skip: Skip | None) -> str | None:
    """The disk cache's key (see the module docstring); ``None`` where ``skip`` has no
    ``cache_key`` (what it skips could not be told from its name)."""
    skip_key = "" if skip is None else getattr(skip, "cache_key", None)
    if skip_key is None:
        return None
    digest = hashlib.sha256(json.dumps([sys.version, list(refs), sorted(roots), skip_key]).encode())
    return hashlib.sha256(digest.digest() + _sources_digest(roots)).hexdigest()


@lru_cache(maxsize=None)
def _sources_digest(roots: frozenset[str]) -> bytes:
    """A hash of the path and text of every source file under ``roots``: read once per process
    for all the task classes that share the roots."""
    digest = hashlib.sha256()
    for root in sorted(roots):
        for path in _root_files(root):
            digest.update(str(path).encode() + b"\0" + _read(path).encode() + b"\0")
    return digest.digest()


def _disk_read(path: Path) -> dict[str, str]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _disk_write(path: Path, key: str, version: str) -> None:
    """Adds one entry, atomically (a concurrent writer's entry may be lost: it is recomputed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _disk_read(path)
        entries.pop(key, None)
        entries[key] = version
        keep = dict(list(entries.items())[-_DISK_ENTRIES:])
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".code-versions-")
        with os.fdopen(fd, "w") as f:
            json.dump(keep, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: versions are computed each time


@lru_cache(maxsize=None)
def _code_version(refs: tuple[str, ...], roots: frozenset[str], skip: Skip | None) -> str:
    cache = disk_cache()
    key = _disk_key(refs, roots, skip) if cache is not None else None
    if key is not None:
        found = _disk_read(cache).get(key)
        if isinstance(found, str):
            return found
    version = _closure_version(refs, roots, skip)
    if key is not None:
        _disk_write(cache, key, version)
    return version


def _closure_version(refs: tuple[str, ...], roots: frozenset[str], skip: Skip | None) -> str:
    digest = hashlib.sha256()
    for module, indices in sorted(code_closure(refs, roots, skip).items()):
        digest.update(module.encode() + b"\0")
        for index in indices:
            digest.update(_dump(module, index) + b"\0")
    return digest.hexdigest()[:16]


def clear_code_cache() -> None:
    """Forget parsed sources (after editing a module in the same process)."""
    _code_version.cache_clear()
    _sources_digest.cache_clear()
    _refs_of.cache_clear()
    _dump.cache_clear()
    _parse.cache_clear()
    _module_file.cache_clear()


def _major_minor(name: str) -> str:
    try:
        return ".".join(metadata.version(name).split(".")[:2])
    except metadata.PackageNotFoundError:
        return "-"


def package_key(names: Iterable[str] = ADDRESS_PACKAGES) -> str:
    """A hash (8 hex) of Python's and the named packages' major.minor versions: a new minor
    release of a library that computes numbers makes new addresses, a patch release does not.
    Cached per process (every address needs it; ``metadata.version`` scans the installed
    distributions, ~10 ms a package) for the ``metadata.version`` in use (tests replace it)."""
    return _package_key(tuple(sorted(set(names))), metadata.version)


@lru_cache(maxsize=None)
def _package_key(names: tuple[str, ...], version: Callable[[str], str]) -> str:
    python = f"python {sys.version_info[0]}.{sys.version_info[1]}"
    text = ";".join([python, *(f"{n} {_major_minor(n)}" for n in names)])
    return hashlib.sha256(text.encode()).hexdigest()[:8]
