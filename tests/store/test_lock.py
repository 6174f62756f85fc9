"""The production lease: exclusive under contention, taken over from dead holders, no debris."""

import errno
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from hsbi.exceptions import StoreError
from hsbi.store import lock
from hsbi.store.lock import lease

PROCESSES, HOLDS = 6, 200  # 1,200 holds in all


def _hold_many(path: str, marker: str, holds: int, queue) -> None:
    overlaps = done = 0
    while done < holds:
        with lease(Path(path), lambda: False, poll=0.001) as must:
            assert must
            try:  # alone under the lease: nobody else holds the marker
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
            else:
                os.close(fd)
                time.sleep(0.0002)
                os.unlink(marker)
        done += 1
    queue.put(overlaps)


def test_lease_is_exclusive_under_contention(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    path, marker = tmp_path / ".locks" / "Demo-x.lock", tmp_path / "inside"
    procs = [ctx.Process(target=_hold_many, args=(str(path), str(marker), HOLDS, queue)) for _ in range(PROCESSES)]
    start = time.time()
    for p in procs:
        p.start()
    overlaps = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    print(f"{PROCESSES * HOLDS} holds by {PROCESSES} processes in {time.time() - start:.1f} s: "
          f"{sum(overlaps)} overlapping")
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    assert sum(overlaps) == 0
    assert not path.exists()


def test_a_dead_holders_lease_is_taken_over(tmp_path):
    path = tmp_path / "Demo-x.lock"
    path.write_text('{"pid": 999999999, "host": "%s", "time": 0}' % os.uname().nodename)
    with lease(path, lambda: False, poll=0.01) as must:
        assert must
    assert not path.exists()


def test_a_stopped_heartbeat_is_taken_over(tmp_path):
    path = tmp_path / "Demo-x.lock"
    path.write_text('{"pid": 1, "host": "elsewhere", "time": 0}')
    os.utime(path, (time.time() - 120, time.time() - 120))
    with lease(path, lambda: False, poll=0.01) as must:
        assert must


def test_a_full_disk_gives_a_store_error_and_no_debris(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock.os, "write", full)
    path = tmp_path / ".locks" / "Demo-x.lock"
    with pytest.raises(StoreError, match=r"cannot take the production lease .*Demo-x.*no space left on device"):
        with lease(path, lambda: False):
            pass
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == []
