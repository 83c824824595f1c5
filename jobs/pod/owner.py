"""Who follows a pod run: one process at a time, the one holding an exclusive lock on its run folder's
`follower.lock` (issue 25: every pod has an owner that cannot die unnoticed).

The lock is flock(2): the kernel drops it when its holder exits, however it exits (SIGKILL, a reboot of
the service's machine, a closed laptop), so a dead follower never leaves a stale claim, unlike a pid file
whose number the system may give to another process. The file also says the holder's pid, for people.

The launcher holds it from the moment its run folder exists (before the pod is created), `jobs follow`
for as long as it follows, and the jobs service's supervisor (jobs/service/dispatcher.py) starts `jobs
follow RUN` for every active pod run of its own that nobody holds: after `--detach`, a killed launcher or a
restart of the service. A second follower of a followed run says who holds it and leaves it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK = "follower.lock"
HOLD_TRIES = 5  # ~0.2 s: outlasts another process's holder() check, which holds a shared lock briefly
_held: dict[str, int] = {}  # this process's locks: holding one twice is a no-op, not a self-conflict


class Followed(Exception):
    """Another process follows this run."""

    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"process {pid}" if pid else "another process")


def _pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def hold(run_dir: Path) -> None:
    """Take the run's follower lock for this process's life (or until release). Followed: someone has it.
    The descriptor is not inherited (PEP 446), so the trainer or a shell this process starts never keeps
    the lock after it."""
    path = str((Path(run_dir) / LOCK).resolve())
    if path in _held:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(HOLD_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == HOLD_TRIES - 1:
                pid = _pid(fd)
                os.close(fd)
                raise Followed(pid) from None
            time.sleep(0.05)  # holder() takes a shared lock for an instant: not a follower
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def release(run_dir: Path) -> None:
    fd = _held.pop(str((Path(run_dir) / LOCK).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


def holder(run_dir: Path) -> int | None:
    """The pid following this run, 0 when its pid is unreadable, None when nobody follows it."""
    path = Path(run_dir) / LOCK
    if str(path.resolve()) in _held:
        return os.getpid()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only when no one holds it exclusively
    except BlockingIOError:
        return _pid(fd) or 0
    finally:
        os.close(fd)
    return None
