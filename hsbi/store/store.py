"""The store: one directory per artifact, written atomically and verified on read.

A store is a local (or network) directory, or an fsspec URL (``memory://``, ``s3://``, ...) where
that backend is installed. Producers always write into a local scratch directory; committing
renames it into place (local) or uploads its files and then the manifest last (fsspec): an
artifact exists exactly when its manifest does. Remote artifacts are read through a local cache,
verified like local ones.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hsbi.exceptions import CorruptArtifactError, StoreError
from hsbi.store.address import ADDRESS_LENGTH, canonical_json
from hsbi.store.lock import DEFAULT_LEASE_SECONDS, GUARD_NAME, lease
from hsbi.store.lock import write_error_reason as _reason

__all__ = ["MANIFEST_NAME", "STORE_FORMAT", "Artifact", "Store", "default_store_root"]

MANIFEST_NAME = "manifest.json"
#: Version of the artifact layout and manifest schema; part of every code version.
STORE_FORMAT = 1
_ADDRESS_RE = re.compile(rf"^[0-9a-f]{{{ADDRESS_LENGTH}}}$")
_FAMILY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PACKAGES = ("hsbi", "numpy", "scipy", "torch", "lightning", "law", "luigi")
_CHUNK = 1 << 20
_PICKLE_OPCODES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def default_store_root() -> str:
    """``$HSBI_STORE`` if set, else ``store`` in the current directory."""
    return os.environ.get("HSBI_STORE", "store")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _rebuild_hint(family: str, path: str) -> str:
    return (
        f"rebuild it: run `law run {family} ... --remove-output 0,a,y` or delete {path} "
        "(`hsbi store gc` lists unreachable artifacts) and run again"
    )


def _looks_pickled(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return head in _PICKLE_OPCODES


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its (local) directory and manifest. Loaders never unpickle."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def address(self) -> str:
        return str(self.manifest["address"])

    @property
    def name(self) -> str:
        return f"{self.manifest['family']}/{self.address}"

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise StoreError(f"artifact {self.name} has no file {name!r}")
        return self.path / name

    def json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """Arrays of an ``.npz`` file; object (pickled) arrays are refused."""
        try:
            with np.load(self.file(name), allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except ValueError as err:
            if "allow_pickle" in str(err) or "Object arrays" in str(err):
                raise StoreError(
                    f"artifact {self.name}: {name} holds pickled objects; hsbi never loads "
                    "pickles (store plain numeric arrays)"
                ) from None
            raise


class Store:
    """A content-addressed store rooted at ``root`` (a path or an fsspec URL).

    Layout: ``root/<family>/<address>/`` holds the artifact's files and ``manifest.json``;
    ``root/.tmp/`` holds local writes in progress, ``root/.locks/`` the production leases and
    ``root/.lease-guard`` the OS lock taken while a lease changes hands.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, cache: str | None = None) -> None:
        url = str(root) if root is not None else default_store_root()
        self.remote = "://" in url and not url.startswith("file://")
        if self.remote:
            import fsspec  # only needed for remote stores

            self.fs, self.root = fsspec.core.url_to_fs(url)
            self.url = url.rstrip("/")
            key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
            base = cache or os.environ.get("HSBI_STORE_CACHE") or Path.home() / ".cache" / "hsbi"
            self.local = Path(base) / key
        else:
            self.fs = None
            self.local = Path(url.removeprefix("file://")).expanduser().absolute()
            self.root = str(self.local)
            self.url = self.root

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- names ---------------------------------------------------------------------------------

    def _check(self, family: str, address: str) -> None:
        if not _FAMILY_RE.match(family):
            raise StoreError(f"invalid artifact family {family!r}: expected an identifier")
        if not isinstance(address, str) or not _ADDRESS_RE.match(address):
            raise StoreError(
                f"invalid address {address!r}: expected {ADDRESS_LENGTH} lowercase hex characters"
            )

    def path(self, family: str, address: str) -> Path:
        """The local directory of an artifact (the cache for remote stores); refuses anything
        that could leave the store root."""
        self._check(family, address)
        return self.local / family / address

    def uri(self, family: str, address: str) -> str:
        self._check(family, address)
        return f"{self.url}/{family}/{address}"

    def _remote_path(self, family: str, address: str, name: str = "") -> str:
        return "/".join(p for p in (self.root.rstrip("/"), family, address, name) if p)

    # -- queries -------------------------------------------------------------------------------

    def exists(self, family: str, address: str) -> bool:
        if self.remote:
            self._check(family, address)
            return bool(self.fs.exists(self._remote_path(family, address, MANIFEST_NAME)))
        return (self.path(family, address) / MANIFEST_NAME).is_file()

    def families(self) -> list[str]:
        if self.remote:
            if not self.fs.exists(self.root):
                return []
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        else:
            names = [p.name for p in self.local.iterdir()] if self.local.is_dir() else []
        return sorted(n for n in names if _FAMILY_RE.match(n))

    def addresses(self, family: str) -> list[str]:
        if self.remote:
            base = self._remote_path(family, "0" * ADDRESS_LENGTH).rsplit("/", 1)[0]
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        else:
            base_dir = self.local / family
            names = [p.name for p in base_dir.iterdir()] if base_dir.is_dir() else []
        return sorted(n for n in names if _ADDRESS_RE.match(n) and self.exists(family, n))

    def artifacts(self) -> Iterator[tuple[str, str]]:
        """All ``(family, address)`` pairs in the store."""
        for family in self.families():
            for address in self.addresses(family):
                yield family, address

    def find(self, address: str) -> str:
        """The family of the artifact with ``address`` (addresses are unique across families)."""
        if not isinstance(address, str) or not _ADDRESS_RE.match(address):
            raise StoreError(
                f"invalid address {address!r}: expected {ADDRESS_LENGTH} lowercase hex characters"
            )
        for family in self.families():
            if self.exists(family, address):
                return family
        raise StoreError(f"no artifact with address {address} in {self.url}")

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(
        self,
        family: str,
        address: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, Any] | Sequence[str] = (),
        code: str = "",
        provenance: Mapping[str, Any] | None = None,
        started: float | None = None,
    ) -> Iterator[Path]:
        """Yield a scratch directory; on success it becomes the artifact in one step.

        On any exception the scratch directory is removed and nothing becomes visible. When the
        artifact appeared meanwhile (another process made it), the new copy is discarded.
        ``provenance`` (e.g. the producing task's full config) is recorded but not hashed.
        ``started`` (a ``time.time()``, e.g. when the producing task began) is recorded with the
        production time in seconds (the manifest's ``started`` and ``seconds``; not hashed).
        """
        self._check(family, address)
        tmp_root = self.local / ".tmp"
        tmp = tmp_root / f"{family}-{address}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            yield tmp
            self._seal(tmp, family, address, params, inputs, code, provenance or {}, started)
            self._commit(tmp, family, address)
        except OSError as err:
            raise StoreError(
                f"cannot write artifact {family}/{address} under {self.url}: "
                f"{_reason(err, tmp_root)}; nothing was stored"
            ) from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _seal(self, tmp: Path, family: str, address: str, params: Any, inputs: Any, code: str,
              provenance: Mapping[str, Any], started: float | None = None) -> None:
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            if rel == MANIFEST_NAME:
                raise StoreError(f"artifact {family}/{address} may not write {MANIFEST_NAME} itself")
            if _looks_pickled(path):
                raise StoreError(f"artifact {family}/{address}: {rel} is a pickle; hsbi stores none")
            _fsync(path)
            files[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
        manifest = {
            "address": address,
            "family": family,
            "params": json.loads(canonical_json(params)),
            "inputs": json.loads(canonical_json(inputs)),
            "code_version": code,
            "files": files,
            "provenance": json.loads(canonical_json(provenance)),
            "packages": _package_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
        }
        if started is not None:
            manifest["started"] = _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds")
            manifest["seconds"] = round(max(time.time() - started, 0.0), 1)
        manifest["digest"] = _manifest_digest(manifest)
        target = tmp / MANIFEST_NAME
        target.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _fsync(target)

    def _commit(self, tmp: Path, family: str, address: str) -> None:
        if self.remote:
            if self.exists(family, address):
                return
            for path in sorted(tmp.rglob("*")):
                if path.is_file() and path.name != MANIFEST_NAME:
                    rel = path.relative_to(tmp).as_posix()
                    target = self._remote_path(family, address, rel)
                    self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)  # no-op on object stores
                    self.fs.put_file(str(path), target)
            self.fs.put_file(str(tmp / MANIFEST_NAME), self._remote_path(family, address, MANIFEST_NAME))
            return
        final = self.path(family, address)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir() and not (final / MANIFEST_NAME).is_file():
            self._discard(final)  # left without a manifest (an interrupted copy, a hand edit)
        try:
            os.rename(tmp, final)
        except OSError:
            if not self.exists(family, address):
                raise

    @contextlib.contextmanager
    def producing(
        self,
        family: str,
        address: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[bool]:
        """Hold the production lease of an artifact; yields whether the caller must produce it
        (``False`` when another process produced it meanwhile). Remote stores hold no leases:
        concurrent producers there are idempotent (the first manifest wins)."""
        self._check(family, address)
        if self.remote:
            yield not self.exists(family, address)
            return
        with lease(self.lease_path(family, address), lambda: self.exists(family, address), lease_seconds,
                   on_wait=on_wait, guard=self.local / GUARD_NAME) as must:
            yield must

    def lease_path(self, family: str, address: str) -> Path:
        """The production lease of an artifact (local stores)."""
        self._check(family, address)
        return self.local / ".locks" / f"{family}-{address}.lock"

    # -- reading -------------------------------------------------------------------------------

    def open(self, family: str, address: str) -> Artifact:
        """Return the artifact after checking every file against its manifest."""
        if self.remote:
            self._fetch(family, address)
        path = self.path(family, address)
        name = f"{family}/{address}"
        hint = _rebuild_hint(family, self.uri(family, address))
        if not (path / MANIFEST_NAME).is_file():
            raise StoreError(f"artifact {name} does not exist in {self.url}")
        try:
            manifest = json.loads((path / MANIFEST_NAME).read_text())
            ok = isinstance(manifest, dict) and manifest.get("digest") == _manifest_digest(manifest)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok or manifest.get("address") != address or manifest.get("family") != family:
            raise CorruptArtifactError(f"artifact {name}: manifest is corrupt; {hint}")
        for rel, meta in manifest["files"].items():
            file = path / rel
            if not file.is_file():
                raise CorruptArtifactError(f"artifact {name}: file {rel} is missing; {hint}")
            if file.stat().st_size != meta["size"] or _sha256(file) != meta["sha256"]:
                raise CorruptArtifactError(
                    f"artifact {name}: file {rel} does not match its sha256; {hint}"
                )
        return Artifact(path=path, manifest=manifest)

    def _fetch(self, family: str, address: str) -> None:
        """Copy a remote artifact into the local cache (atomically), if not there yet."""
        final = self.path(family, address)
        if (final / MANIFEST_NAME).is_file():
            return
        if not self.exists(family, address):
            raise StoreError(f"artifact {family}/{address} does not exist in {self.url}")
        manifest = json.loads(self.fs.cat_file(self._remote_path(family, address, MANIFEST_NAME)))
        tmp = self.local / ".tmp" / f"fetch-{family}-{address}-{uuid.uuid4().hex[:8]}"
        try:
            for rel in manifest.get("files", {}):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._remote_path(family, address, rel), str(tmp / rel))
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            final.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def manifest(self, family: str, address: str) -> dict[str, Any]:
        """The manifest as stored (not verified; use :meth:`open` to verify); one that is not a
        JSON mapping (truncated, say) raises :class:`CorruptArtifactError`."""
        if self.remote:
            text = self.fs.cat_file(self._remote_path(family, address, MANIFEST_NAME))
        else:
            text = (self.path(family, address) / MANIFEST_NAME).read_bytes()
        try:
            manifest = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            manifest = None
        if not isinstance(manifest, dict):
            hint = _rebuild_hint(family, self.uri(family, address))
            raise CorruptArtifactError(f"artifact {family}/{address}: manifest is corrupt; {hint}")
        return manifest

    def incomplete(self) -> list[tuple[str, str]]:
        """``(family, address)`` of local artifact directories without a manifest (an interrupted
        copy or removal, a hand edit): never valid, replaced by a rebuild, removed by gc. Remote
        stores upload the manifest last, so there such a directory may be an upload at work."""
        if self.remote:
            return []
        return [
            (family, path.name)
            for family in self.families()
            for path in sorted((self.local / family).iterdir())
            if _ADDRESS_RE.match(path.name) and path.is_dir() and not (path / MANIFEST_NAME).is_file()
        ]

    # -- removal -------------------------------------------------------------------------------

    def remove(self, family: str, address: str) -> None:
        """Remove an artifact: its manifest first, so it is never seen half-removed."""
        if self.remote:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._remote_path(family, address, MANIFEST_NAME))
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._remote_path(family, address), recursive=True)
            shutil.rmtree(self.path(family, address), ignore_errors=True)
            return
        path = self.path(family, address)
        if path.exists():
            self._discard(path)

    def _discard(self, path: Path) -> None:
        """Move a local directory out of sight in one step, then delete it."""
        trash = self.local / ".tmp" / f"trash-{path.parent.name}-{path.name}-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def size(self, family: str, address: str) -> int:
        return sum(f["size"] for f in self.manifest(family, address).get("files", {}).values())


