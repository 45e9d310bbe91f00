"""Run native decoding in a child process, so one bad file fails alone.

Decoders written in C can segfault, abort, hang or allocate without bound. Whatever
they do inside a child started here, the caller gets a ``MediaError`` that says what
happened (``decoder process crashed (SIGSEGV)``, ``timed out after 30 s``,
``exceeded memory limit of 4096 MiB``) and the worker process lives on.

Two entry points:

* ``run_isolated(target, kwargs, ...)``: one call in one fresh child. The request and
  the result travel as pickle files in a private temporary folder (protocol 5, so
  results of a few hundred MB cost one write and one read, not a pipe dance).
* ``probe_isolated(paths, ...)``: one long-lived child probes many files one after
  another and streams each result back over a private pipe; when it dies or hangs on
  file k, file k gets a ``MediaError`` and a fresh child carries on with k + 1.
* ``IsolatedWorker``: one long-lived child that runs calls one after another, for a
  worker that decodes part after part. A fresh Python with PyAV, OpenCV and the
  detectors costs about half a CPU-second to start: on a folder of short clips that
  was a quarter of the decode stage. A call that crashes, hangs or runs out of memory
  fails alone, as with ``run_isolated``, and the next call gets a fresh child.

Memory limit: the child sets ``RLIMIT_AS`` (address space) to ``memory_mb``. The
kernel enforces it at the allocation itself, so even a decoder that asks for 50 GB in
one call is stopped before the machine swaps; a watchdog that polls RSS would notice
too late. numpy, PyAV and decord import fine under 512 MiB. torch reserves about
3.4 GiB of address space when imported, so targets that import torch need
``memory_mb=None`` or at least 4096. ``MALLOC_ARENA_MAX=2`` is set in limited
children because glibc reserves 64 MiB of address space per thread arena, which a
multi-threaded decoder would otherwise burn through without using it.

Nothing here goes through a shell: children are started with argument lists.
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Union

from vidan.records import STAGE_PROBE, MediaError, MediaInfo, VidanError

STDERR_TAIL_BYTES = 4096
_MAX_TAIL_LINES = 12
_PROBE_TARGET = "vidan.media.probe:probe"
# How long a fresh prober may take to import its libraries before the first file.
_STARTUP_GRACE_S = 60.0
# Exit code a child uses when it could not even report its own failure.
_EXIT_NO_REPORT = 86

_LEN = struct.Struct("<Q")


class DecoderFailed(MediaError):
    """The child failed, not the call in it: it crashed, hung past its deadline, ran out of
    its memory limit or could not start. Another decoder may still read the file."""


# --- parent side: one call ---------------------------------------------------------


def run_isolated(target: str, kwargs: dict, *, stage: str, timeout_s: float,
                 memory_mb: Optional[int] = None) -> Any:
    """Call ``target(**kwargs)`` ("package.module:function") in a fresh child process.

    Returns what the function returned (it must be picklable). Raises
    ``MediaError(stage, ...)`` when the function raised, the child crashed, ran past
    ``timeout_s`` (child start-up included) or past ``memory_mb`` MiB of address space.
    A ``VidanError`` raised by the function keeps its stage and message.
    """
    _split_target(target)  # fail fast in the caller on a malformed target
    workdir = tempfile.mkdtemp(prefix="vidan-isolate-")
    try:
        request = os.path.join(workdir, "request.pkl")
        result = os.path.join(workdir, "result.pkl")
        stderr_path = os.path.join(workdir, "stderr.txt")
        with open(request, "wb") as f:
            pickle.dump({"target": target, "kwargs": kwargs, "memory_mb": memory_mb, "sys_path": list(sys.path)},
                        f, protocol=5)
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vidan.media.isolate", "call", request, result],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_child_env(memory_mb),
                start_new_session=True)  # own process group: a timeout kills decoder grandchildren too
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise DecoderFailed(stage, _with_tail(f"timed out after {timeout_s:g} s", _tail(stderr_path))) from None
            finally:
                # Also on success (stray grandchildren, such as an ffmpeg the target started)
                # and on Ctrl-C, which never reaches a child in its own session.
                _kill_group(proc)
                if proc.returncode is None:
                    proc.wait()
        tail = _tail(stderr_path)
        if rc == 0 and os.path.exists(result):
            with open(result, "rb") as f:
                outcome = pickle.load(f)
            if outcome["ok"]:
                return outcome["value"]
            raise _error_from_child(stage, outcome, memory_mb, tail)
        raise DecoderFailed(stage, _death_message("decoder process", rc, memory_mb, tail))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _error_from_child(stage: str, outcome: dict, memory_mb: Optional[int], tail: str) -> MediaError:
    if outcome.get("stage") is not None:  # a VidanError: its own words are the message
        return MediaError(outcome["stage"], outcome["message"])
    described = f"{outcome['type']}: {outcome['message']}"
    if memory_mb is not None and (outcome["type"] == "MemoryError" or any(m in described for m in _ALLOC_MARKERS)):
        # e.g. "libtorch_cpu.so: failed to map segment": an import that needs more address space
        return DecoderFailed(stage, _with_tail(f"exceeded memory limit of {memory_mb} MiB ({described})", tail))
    return MediaError(stage, _with_tail(described, tail))


# --- parent side: many probes in one child -----------------------------------------


def probe_isolated(paths: list[str], *, timeout_s: float = 30.0, memory_mb: Optional[int] = 2048,
                   target: str = _PROBE_TARGET) -> list[Union[MediaInfo, MediaError]]:
    """Probe ``paths`` in one long-lived child; one result per path, in order.

    ``timeout_s`` applies to each file. A crash or hang on one file costs that file
    (``prober crashed (SIGSEGV)`` / ``timed out after 30 s``) and a child restart.
    ``target`` is the probe function, ``vidan.media.probe:probe`` unless a test swaps it.
    """
    results: list[Union[MediaInfo, MediaError, None]] = [None] * len(paths)
    k = 0
    while k < len(paths):
        k = _probe_run(paths, k, results, timeout_s=timeout_s, memory_mb=memory_mb, target=target)
    return results  # type: ignore[return-value]


def _probe_run(paths: list[str], start: int, results: list, *, timeout_s: float, memory_mb: Optional[int],
               target: str) -> int:
    """Start one prober on ``paths[start:]``; fill ``results``; return the next index to do."""
    workdir = tempfile.mkdtemp(prefix="vidan-probe-")
    try:
        request = os.path.join(workdir, "request.pkl")
        stderr_path = os.path.join(workdir, "stderr.txt")
        with open(request, "wb") as f:
            pickle.dump({"target": target, "paths": paths[start:], "memory_mb": memory_mb,
                         "sys_path": list(sys.path)}, f, protocol=5)
        read_fd, write_fd = os.pipe()
        try:
            with open(stderr_path, "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "vidan.media.isolate", "probe", request, str(write_fd)],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_child_env(memory_mb),
                    pass_fds=(write_fd,), start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds the only write end: EOF means it is gone
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            return _collect(proc, pipe, paths, start, results, timeout_s, memory_mb, stderr_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# A probe reads every packet of a file whose clock may restart (vidan.media.timeline):
# each file gets this long on top of the timeout for each byte, a slow disk's pace.
_READ_BYTES_PER_S = 100e6


def _read_allowance(path: str) -> float:
    try:
        return os.path.getsize(path) / _READ_BYTES_PER_S
    except OSError:
        return 0.0


def _collect(proc: subprocess.Popen, pipe, paths: list[str], start: int, results: list, timeout_s: float,
             memory_mb: Optional[int], stderr_path: str) -> int:
    reader = _RecordReader(pipe)
    ready = False
    k = start
    try:
        while k < len(paths):
            budget = timeout_s + _read_allowance(paths[k])
            deadline = time.monotonic() + (budget if ready else max(budget, _STARTUP_GRACE_S))
            record = reader.read(deadline)
            if record is _TIMEOUT:
                _kill_group(proc)
                proc.wait()
                if not ready:
                    return _fail_rest(paths, k, results, "prober did not start within "
                                      f"{round(max(budget, _STARTUP_GRACE_S), 1):g} s", stderr_path)
                results[k] = MediaError(STAGE_PROBE, _with_tail(f"timed out after {round(budget, 1):g} s",
                                                                _tail(stderr_path)))
                return k + 1
            if record is _EOF:
                _kill_group(proc)
                rc = proc.wait()
                if not ready:  # the environment is broken, not one file: do not spin on restarts
                    return _fail_rest(paths, k, results, _death_message("prober", rc, memory_mb, ""), stderr_path)
                results[k] = MediaError(STAGE_PROBE, _death_message("prober", rc, memory_mb, _tail(stderr_path)))
                return k + 1
            if record[0] == "ready":
                ready = True
                continue
            _, value = record
            results[k] = value
            k += 1
        return k  # every path answered: the child has nothing left worth waiting for
    finally:
        _kill_group(proc)
        if proc.returncode is None:
            proc.wait()


def _fail_rest(paths: list[str], k: int, results: list, what: str, stderr_path: str) -> int:
    error = MediaError(STAGE_PROBE, _with_tail(what, _tail(stderr_path)))
    for i in range(k, len(paths)):
        results[i] = error
    return len(paths)


_TIMEOUT = object()
_EOF = object()


class _Killed(Exception):
    """An IsolatedWorker's child was SIGKILLed from outside, starting or mid-call."""


class _RecordReader:
    """Length-prefixed pickles from a pipe, with a deadline per record."""

    def __init__(self, pipe):
        self._pipe = pipe
        self._buf = bytearray()

    def _fill(self, n: int, deadline: float) -> object:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return _TIMEOUT
            readable, _, _ = select.select([self._pipe], [], [], left)
            if not readable:
                return _TIMEOUT
            chunk = self._pipe.read(1 << 20)
            if not chunk:
                return _EOF
            self._buf += chunk
        return None

    def read(self, deadline: float) -> Any:
        status = self._fill(_LEN.size, deadline)
        if status is not None:
            return status
        (size,) = _LEN.unpack_from(self._buf)
        status = self._fill(_LEN.size + size, deadline)
        if status is not None:
            return status
        payload = bytes(self._buf[_LEN.size:_LEN.size + size])
        del self._buf[:_LEN.size + size]
        return pickle.loads(payload)


# --- parent side: a long-lived child for many calls ---------------------------------

# A child is replaced after this many calls: whatever a decoder leaks stays bounded.
MAX_CALLS_PER_CHILD = 64


class IsolatedWorker:
    """Runs ``target(**kwargs)`` calls in one long-lived child, one call at a time.

    Each call's outcome is what ``run_isolated`` gives for it: the value, or a
    ``MediaError(stage, ...)`` that says what went wrong (the function's own error, a
    crash, ``timed out after ...`` or the memory limit, with the child's last stderr
    lines written during that call). A child that crashed or was cut off is replaced at
    the next call. ``timeout_s`` covers the call alone; a child's start-up has its own
    grace, so a cold import never times out a part.
    """

    def __init__(self, *, memory_mb: Optional[int] = None, max_calls: int = MAX_CALLS_PER_CHILD):
        self.memory_mb = memory_mb
        self.max_calls = max_calls
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._workdir: Optional[str] = None
        self._calls = 0

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def call(self, target: str, kwargs: dict, *, stage: str, timeout_s: float) -> Any:
        _split_target(target)
        with self._lock:
            if self._proc is not None and self._calls >= self.max_calls:
                self._stop()
            # A child SIGKILLed from outside (the kernel's OOM killer, or Ray ending this
            # worker: it kills a worker's children just before the worker itself) is given
            # the call once more in a fresh child. When this process is the one being ended,
            # the second try never answers and Ray runs the call again elsewhere; answering
            # "crashed (SIGKILL)" at once would fail a file that was never at fault.
            for attempt in range(2):
                try:
                    return self._call_once(target, kwargs, stage, timeout_s)
                except _Killed as killed:
                    if attempt:
                        raise DecoderFailed(stage, str(killed)) from None

    def _call_once(self, target: str, kwargs: dict, stage: str, timeout_s: float) -> Any:
        for attempt in (0, 1):
            if self._proc is None:
                self._spawn(stage)
            since = os.path.getsize(self._stderr)
            try:
                _send(self._req, {"target": target, "kwargs": kwargs})
                break
            except BrokenPipeError:  # the child died between calls: the request never ran
                self._stop()
                if attempt:
                    raise DecoderFailed(stage, "decoder process could not be started again") from None
        self._calls += 1
        record = self._reader.read(time.monotonic() + timeout_s)
        if record is _TIMEOUT:
            tail = _tail(self._stderr, since)
            self._stop()
            raise DecoderFailed(stage, _with_tail(f"timed out after {timeout_s:g} s", tail))
        if record is _EOF:
            rc = self._kill()
            tail = _tail(self._stderr, since)
            self._stop()
            message = _death_message("decoder process", rc, self.memory_mb, tail)
            if rc == -signal.SIGKILL:
                raise _Killed(message)
            raise DecoderFailed(stage, message)
        result = os.path.join(self._workdir, "result.pkl")
        with open(result, "rb") as f:
            outcome = pickle.load(f)
        os.unlink(result)
        if outcome["ok"]:
            return outcome["value"]
        raise _error_from_child(stage, outcome, self.memory_mb, _tail(self._stderr, since))

    def _spawn(self, stage: str) -> None:
        self._workdir = tempfile.mkdtemp(prefix="vidan-worker-")
        self._stderr = os.path.join(self._workdir, "stderr.txt")
        req_read, req_write = os.pipe()
        res_read, res_write = os.pipe()
        try:
            with open(self._stderr, "wb") as err:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "vidan.media.isolate", "serve", str(req_read), str(res_write),
                     self._workdir, str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_child_env(self.memory_mb),
                    pass_fds=(req_read, res_write), start_new_session=True)
        except BaseException:
            for fd in (req_write, res_read):
                os.close(fd)
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            raise
        finally:
            os.close(req_read)
            os.close(res_write)  # the child holds the only write end: EOF means it is gone
        self._req = req_write
        self._pipe = os.fdopen(res_read, "rb", buffering=0)
        self._reader = _RecordReader(self._pipe)
        self._calls = 0
        try:
            _send(self._req, {"memory_mb": self.memory_mb, "sys_path": list(sys.path)})
        except BrokenPipeError:
            pass  # it died at once: the read below says how
        record = self._reader.read(time.monotonic() + _STARTUP_GRACE_S)
        if record is _TIMEOUT or record is _EOF:
            rc = self._kill()
            tail = _tail(self._stderr)
            self._stop()
            what = (f"decoder process did not start within {_STARTUP_GRACE_S:g} s" if record is _TIMEOUT
                    else _death_message("decoder process", rc, self.memory_mb, ""))
            if record is _EOF and rc == -signal.SIGKILL:  # killed while starting: as mid-call
                raise _Killed(_with_tail(what, tail))
            raise DecoderFailed(stage, _with_tail(what, tail))

    def _kill(self) -> int:
        _kill_group(self._proc)
        return self._proc.wait()

    def _stop(self) -> None:
        """End the child (if any) and forget it; the next call starts another."""
        if self._proc is None:
            return
        try:
            os.close(self._req)
        except OSError:
            pass
        self._kill()
        self._pipe.close()
        shutil.rmtree(self._workdir, ignore_errors=True)
        self._proc = self._workdir = None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __del__(self):
        try:
            self._stop()
        except Exception:
            pass


# --- shared parent helpers ---------------------------------------------------------


def _child_env(memory_mb: Optional[int]) -> dict[str, str]:
    env = dict(os.environ)
    # vidan itself must be importable in the child even when it is not installed
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if memory_mb is not None:
        env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty


def _tail(stderr_path: str, since: int = 0) -> str:
    """The last meaningful lines of what the child wrote (after byte ``since``: a
    long-lived child's earlier calls are not this call's story), at most
    ``STDERR_TAIL_BYTES``."""
    try:
        with open(stderr_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(since, f.tell() - STDERR_TAIL_BYTES))
            data = f.read()
    except OSError as e:
        return f"(stderr unreadable: {e})"
    lines = [ln.strip() for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-_MAX_TAIL_LINES:])


def _with_tail(message: str, tail: str) -> str:
    return f"{message}: {tail}" if tail else message


_ALLOC_MARKERS = ("bad_alloc", "MemoryError", "Cannot allocate memory", "out of memory", "failed to map")


def _death_message(who: str, rc: int, memory_mb: Optional[int], tail: str) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        message = f"{who} crashed ({name})"
    elif rc == 0:
        message = f"{who} exited without a result"
    else:
        message = f"{who} exited with code {rc}"
    # A native decoder that hits the address-space limit usually aborts on a failed
    # allocation rather than raising: name the limit so the report says why.
    if memory_mb is not None and any(m in tail for m in _ALLOC_MARKERS):
        message = f"exceeded memory limit of {memory_mb} MiB ({message})"
    return _with_tail(message, tail)


def _split_target(target: str) -> tuple[str, str]:
    module, sep, func = target.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"target must be 'package.module:function', not {target!r}")
    return module, func


# --- child side --------------------------------------------------------------------


def _child_limits(request: dict) -> None:
    memory_mb = request.get("memory_mb")
    if memory_mb is not None:
        limit = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for entry in reversed(request.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _child_setup(request: dict) -> Any:
    _child_limits(request)
    module, func = _split_target(request["target"])
    return getattr(importlib.import_module(module), func)


def _describe(exc: BaseException) -> dict:
    if isinstance(exc, VidanError):
        return {"ok": False, "type": type(exc).__name__, "stage": exc.stage, "message": exc.message}
    return {"ok": False, "type": type(exc).__name__, "stage": None, "message": str(exc)}


def _child_call(request_path: str, result_path: str) -> int:
    with open(request_path, "rb") as f:
        request = pickle.load(f)
    try:
        fn = _child_setup(request)
        outcome = {"ok": True, "value": fn(**request["kwargs"])}
    except Exception as exc:
        outcome = _describe(exc)
    _write_outcome(outcome, result_path)
    return 0


def _write_outcome(outcome: dict, result_path: str) -> None:
    partial = result_path + ".part"
    try:
        with open(partial, "wb") as f:
            pickle.dump(outcome, f, protocol=5)
    except Exception as exc:  # e.g. an unpicklable return value, or no memory left to write it
        outcome = _describe(exc)
        outcome["message"] = f"could not send the result back: {outcome['message']}"
        with open(partial, "wb") as f:
            pickle.dump(outcome, f, protocol=5)
    os.replace(partial, result_path)  # the parent never reads half a result


def _send(fd: int, record: Any) -> None:
    payload = pickle.dumps(record, protocol=5)
    data = _LEN.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _child_probe(request_path: str, fd: int) -> int:
    with open(request_path, "rb") as f:
        request = pickle.load(f)
    probe = _child_setup(request)
    memory_mb = request.get("memory_mb")
    _send(fd, ("ready",))
    for path in request["paths"]:
        try:
            value: Any = probe(path)
        except VidanError as exc:
            value = MediaError(exc.stage, exc.message)
        except MemoryError:
            value = MediaError(STAGE_PROBE, f"exceeded memory limit of {memory_mb} MiB (MemoryError)")
        except Exception as exc:
            value = MediaError(STAGE_PROBE, f"{type(exc).__name__}: {exc}")
        _send(fd, ("result", value))
    return 0


def _read_exact(fd: int, n: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _receive(fd: int) -> Any:
    """The next length-prefixed pickle from the parent; None when the parent is gone."""
    head = _read_exact(fd, _LEN.size)
    if head is None:
        return None
    payload = _read_exact(fd, _LEN.unpack(head)[0])
    return None if payload is None else pickle.loads(payload)


def _exit_with_parent(parent: int) -> None:
    """A child whose parent died (a worker killed mid-call) must not decode on for an
    hour: it was reparented, so its parent id is no longer ``parent`` (the id the parent
    gave: read here, it would already be the new one if the parent died first)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _child_serve(req_fd: int, res_fd: int, workdir: str, parent: int) -> int:
    _exit_with_parent(parent)
    setup = _receive(req_fd)
    if setup is None:
        return 0
    _child_limits(setup)
    _send(res_fd, ("ready",))
    result = os.path.join(workdir, "result.pkl")
    while True:
        request = _receive(req_fd)
        if request is None:
            return 0  # the parent closed the pipe: no more work
        try:
            module, func = _split_target(request["target"])
            fn = getattr(importlib.import_module(module), func)
            outcome = {"ok": True, "value": fn(**request["kwargs"])}
        except Exception as exc:
            outcome = _describe(exc)
        _write_outcome(outcome, result)
        _send(res_fd, ("done",))


def _main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "call":
            return _child_call(argv[1], argv[2])
        if len(argv) == 3 and argv[0] == "probe":
            return _child_probe(argv[1], int(argv[2]))
        if len(argv) == 5 and argv[0] == "serve":
            return _child_serve(int(argv[1]), int(argv[2]), argv[3], int(argv[4]))
    except Exception:
        # Without a result file the parent reads this traceback as the stderr tail.
        traceback.print_exc()
        return _EXIT_NO_REPORT
    print("usage: python -m vidan.media.isolate call REQUEST RESULT | probe REQUEST FD | serve IN OUT DIR PARENT",
              file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
