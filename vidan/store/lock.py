"""One writer per report at a time.

Locally the lock is ``flock`` on ``_lock``: the kernel drops it when its process dies,
even by ``kill -9``, so a killed run never blocks the next one. On object storage there
is no such thing: the lock is a lease object created with put-if-absent, renewed while
the run goes on, and taken over once it has expired. The commit protocol does not rely
on either: two runs that overlap anyway still never produce duplicates.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Optional

from vidan.store.storage import LocalStorage, OutputError, Storage

LOCK = "_lock"
LEASE_S = 120.0  # an object-store lease not renewed for this long is taken over


class LockedError(OutputError):
    pass


def _holder(run_id: str, lease_s: Optional[float] = None) -> dict:
    d = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
         "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if lease_s is not None:
        d["expires"] = time.time() + lease_s
    return d


def _describe(info: Optional[dict]) -> str:
    if not info:
        return ""
    return f" (run {info.get('run_id')}, pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


class FileLock:
    def __init__(self, storage: LocalStorage, run_id: str):
        self.storage, self.run_id, self._fd = storage, run_id, None

    def acquire(self, wait: bool = False, poll_s: float = 1.0, timeout_s: Optional[float] = None) -> None:
        p = self.storage.path(LOCK)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() > deadline):
                    try:
                        info = json.loads(os.pread(fd, 4096, 0) or b"null")
                    except ValueError:
                        info = None
                    os.close(fd)
                    raise LockedError(f"another vidan run is writing to {self.storage.uri}{_describe(info)}; "
                                      "wait for it to finish, or pass --wait") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(self.run_id)).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


class LeaseLock:
    """A lease object on a store without file locks; renewed by a background thread."""

    def __init__(self, storage: Storage, run_id: str, lease_s: float = LEASE_S):
        self.storage, self.run_id, self.lease_s = storage, run_id, lease_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.took_over: Optional[dict] = None

    def acquire(self, wait: bool = False, poll_s: float = 2.0, timeout_s: Optional[float] = None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.storage.create(LOCK, json.dumps(_holder(self.run_id, self.lease_s)).encode()):
                break
            raw = self.storage.read(LOCK)
            try:
                info = json.loads(raw) if raw else None
            except ValueError:
                info = None
            if info is None or float(info.get("expires", 0)) < time.time():
                # expired (its run was killed): take it over, then make sure we won
                mine = _holder(self.run_id, self.lease_s)
                self.storage.put(LOCK, json.dumps(mine).encode())
                time.sleep(0.2)
                again = json.loads(self.storage.read(LOCK) or b"null") or {}
                if again.get("run_id") == self.run_id:
                    self.took_over = info
                    break
                continue
            if not wait or (deadline is not None and time.monotonic() > deadline):
                raise LockedError(f"another vidan run is writing to {self.storage.uri}{_describe(info)}; "
                                  "wait for it to finish, or pass --wait")
            time.sleep(poll_s)
        self._thread = threading.Thread(target=self._renew, daemon=True, name="vidan-lease")
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.storage.put(LOCK, json.dumps(_holder(self.run_id, self.lease_s)).encode())
            except Exception:  # a failed renewal shortens the lease; commits stay safe without it
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            raw = self.storage.read(LOCK)
            try:
                if raw and json.loads(raw).get("run_id") == self.run_id:
                    self.storage.delete(LOCK)
            except ValueError:
                pass


def make_lock(storage: Storage, run_id: str):
    return FileLock(storage, run_id) if isinstance(storage, LocalStorage) else LeaseLock(storage, run_id)
