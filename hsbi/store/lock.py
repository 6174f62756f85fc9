"""Leases on artifacts: one producer at a time, with recovery from crashed holders."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["DEFAULT_LEASE_SECONDS", "lease"]

#: A lease whose heartbeat is older than this is considered abandoned.
DEFAULT_LEASE_SECONDS = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(path: Path, lease_seconds: float) -> bool:
    """Stale when its holder (on this host) is dead, or its heartbeat stopped."""
    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return True  # vanished or half-written: let the caller retry
    if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
        return True
    return age > lease_seconds


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
    return True


@contextlib.contextmanager
def lease(
    path: Path,
    done: Callable[[], bool],
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    poll: float = 0.2,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[bool]:
    """Hold the lease at ``path`` while the block runs; yields ``False`` if ``done()`` became true
    while waiting (another process produced the artifact), ``True`` if the caller must produce it.

    A heartbeat thread refreshes the lease every ``lease_seconds / 4``; a lease whose holder died
    on this host, or whose heartbeat is older than ``lease_seconds``, is broken and taken over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        if done():
            yield False
            return
        if _try_create(path):
            break
        if _is_stale(path, lease_seconds):
            with contextlib.suppress(FileNotFoundError):
                stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
                os.rename(path, stale)  # only one breaker wins the rename
                stale.unlink()
            continue
        if on_wait is not None and not waited:
            on_wait(f"waiting for another process producing {path.stem}")
            waited = True
        time.sleep(poll)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_seconds / 4):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield not done()
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
