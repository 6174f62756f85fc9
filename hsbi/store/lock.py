"""Leases on artifacts: one producer at a time, with recovery from crashed holders.

A lease is a small JSON file (holder's pid, host, time) whose mtime is its heartbeat. Every change
of lease files (take, break a stale one, give back) happens under one OS lock (``flock``) on a
guard file (the store's ``.lease-guard``), held for a few file operations: so two processes never both
see a lease free, a lease file is never seen half-written (it is written aside and renamed into
place), and a holder only removes its own lease. The kernel releases the guard when a process dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from hsbi.exceptions import StoreError

__all__ = ["DEFAULT_LEASE_SECONDS", "GUARD_NAME", "lease", "lease_is_held", "write_error_reason"]

#: A lease whose heartbeat is older than this is considered abandoned.
DEFAULT_LEASE_SECONDS = 60.0
#: The guard file of a store's leases, in its root (kept: it is locked, never removed).
GUARD_NAME = ".lease-guard"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def write_error_reason(err: OSError, where: Path) -> str:
    """Why a write failed, saying so plainly when the file system is full."""
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or (free is not None and free < 1 << 16):
        return f"no space left on device ({free} bytes free): {err.strerror or err}"
    return str(err.strerror or err)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict | None:
    """The lease's content; None when there is none (or it cannot be read: an old-style one)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _is_stale(path: Path, lease_seconds: float) -> bool:
    """Stale when its holder (on this host) is dead, or its heartbeat stopped."""
    info = _read(path)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return True
    if info is None:
        return True
    if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
        return True
    return age > lease_seconds


def lease_is_held(path: Path, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
    """Whether a live producer holds the lease at ``path``."""
    return path.is_file() and not _is_stale(path, lease_seconds)


@contextlib.contextmanager
def _guarded(guard: Path) -> Iterator[None]:
    """Hold the guard file's OS lock (a file system without ``flock``: none)."""
    fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, token: str) -> None:
    """Write the lease aside and rename it into place (replacing a stale one)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "token": token}
    aside = path.with_name(f".{path.name}.{token}")
    try:
        fd = os.open(aside, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        os.replace(aside, path)
    except OSError:
        with contextlib.suppress(OSError):
            aside.unlink()
        raise


def _try_take(path: Path, guard: Path, token: str, lease_seconds: float) -> bool:
    try:
        with _guarded(guard):
            if path.exists() and not _is_stale(path, lease_seconds):
                return False
            _write(path, token)
            return True
    except OSError as err:
        raise StoreError(
            f"cannot take the production lease {path.stem} in {path.parent}: "
            f"{write_error_reason(err, path.parent)}; nothing was produced"
        ) from None


def _give_back(path: Path, guard: Path, token: str) -> None:
    """Remove the lease if it is still ours (it may have been taken over meanwhile)."""
    with _guarded(guard):
        info = _read(path)
        if info is not None and info.get("token") == token:
            path.unlink()


@contextlib.contextmanager
def _heartbeat(path: Path, period: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def lease(
    path: Path,
    done: Callable[[], bool],
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    poll: float = 0.2,
    on_wait: Callable[[str], None] | None = None,
    guard: Path | None = None,
) -> Iterator[bool]:
    """Hold the lease at ``path`` while the block runs; yields ``False`` if ``done()`` became true
    while waiting (another process produced the artifact), ``True`` if the caller must produce it.

    A heartbeat thread refreshes the lease every ``lease_seconds / 4``; a lease whose holder died
    on this host, or whose heartbeat is older than ``lease_seconds``, is broken and taken over.
    ``guard`` is the file whose OS lock serialises changes of leases (default: ``GUARD_NAME``
    next to ``path``; every process must use the same one for a lease). Raises
    :class:`~hsbi.exceptions.StoreError` when the lease cannot be written (a full disk).
    """
    guard = guard if guard is not None else path.with_name(GUARD_NAME)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create {path.parent}: {write_error_reason(err, path.parent.parent)}") from None
    token, waited = uuid.uuid4().hex, False
    while True:
        if done():
            yield False
            return
        if _try_take(path, guard, token, lease_seconds):
            break
        if on_wait is not None and not waited:
            on_wait(f"waiting for another process producing {path.stem}")
            waited = True
        time.sleep(poll)
    try:
        with _heartbeat(path, lease_seconds / 4):
            yield not done()
    finally:
        _give_back(path, guard, token)
