"""One trainer per workdir: ``workdir/train.lock`` names the host and pid of the trainer using it.

Two trainers writing one workdir corrupt each other's checkpoints and logs, so a second one is
refused with the holder's host and pid. The holder refreshes the file's time every
:data:`HEARTBEAT_S` seconds; a lock is stale, and is taken over with a log line, when its process
is gone on this host, or (a run killed on one host and rescheduled on another) when it has not
been refreshed for :data:`STALE_AFTER_S` seconds. Only JAX process 0 of a multi-host job holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable

import jax

LOCK_FILE = "train.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
UNWRITTEN_GRACE_S = 10.0

_held_here: set[str] = set()  # lock paths this process holds


def _read(path: str) -> dict | None:
    """The holder recorded in ``path``; None if the file is unreadable or not a lock record."""
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) and {"host", "pid"} <= holder.keys() else None
    except (OSError, ValueError):
        return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_reason(path: str, holder: dict | None) -> str | None:
    """Why the lock at ``path`` held by ``holder`` is stale, or None while its trainer may be running."""
    try:
        age = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return "it was just released"
    if holder is None:  # a trainer writes its record right after creating the file
        return "it names no holder" if age > UNWRITTEN_GRACE_S else None
    if holder["host"] == socket.gethostname():
        if holder["pid"] == os.getpid():  # this process did not take it: a killed run had this pid
            return None if os.path.abspath(path) in _held_here else "its run had this process's pid"
        if not _process_exists(holder["pid"]):
            return "no such process on this host"
    if age > STALE_AFTER_S:
        return f"not refreshed for {age:.0f} s"
    return None


def _describe(holder: dict) -> str:
    return f"host {holder['host']}, pid {holder['pid']}, since {holder.get('since', '?')}"


def _refused(workdir: str, path: str, holder: dict | None) -> FileExistsError:
    held_by = _describe(holder) if holder else "its record is being written"
    return FileExistsError(
        f"the workdir {workdir} is in use by another trainer ({held_by}): wait for it to end or "
        f"stop it, or pass another workdir; if no trainer is running there, delete {path}"
    )


def check(workdir: str) -> None:
    """Raises the refusal :class:`WorkdirLock` would raise now, without taking the lock (a fast
    check before a long start-up)."""
    path = os.path.join(workdir, LOCK_FILE)
    if jax.process_index() == 0 and os.path.exists(path):
        holder = _read(path)
        if stale_reason(path, holder) is None:
            raise _refused(workdir, path, holder)


class WorkdirLock:
    """Context manager holding ``workdir/train.lock`` (process 0 only); released on exit."""

    def __init__(self, workdir: str, log: Callable[[str], None] = print):
        self.workdir = workdir
        self.path = os.path.abspath(os.path.join(workdir, LOCK_FILE))
        self.log = log
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> WorkdirLock:
        if jax.process_index() == 0:
            self._acquire()
            self._heartbeat = threading.Thread(target=self._refresh, name="workdir-lock", daemon=True)
            self._heartbeat.start()
        return self

    def _acquire(self) -> None:
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(3):  # a takeover can race another trainer's; then its lock is live and refused
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                reason = stale_reason(self.path, holder)
                if reason is None:
                    raise _refused(self.workdir, self.path, holder) from None
                if _read(self.path) != holder:  # another trainer took it over meanwhile
                    continue
                held_by = _describe(holder) if holder else "no holder"
                self.log(f"taking over the stale lock {self.path} ({held_by}): {reason}")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            _held_here.add(self.path)
            return
        raise _refused(self.workdir, self.path, _read(self.path))

    def _refresh(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __exit__(self, *exc) -> None:
        if self._heartbeat is None:
            return
        self._stop.set()
        self._heartbeat.join()
        _held_here.discard(self.path)
        holder = _read(self.path)
        if holder and holder["host"] == socket.gethostname() and holder["pid"] == os.getpid():
            os.unlink(self.path)
