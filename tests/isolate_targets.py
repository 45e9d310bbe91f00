"""Misbehaving functions that tests run inside isolated children and Ray workers.

They live in a module (not in the test file) so the child can import them by name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import numpy as np

from vidan.records import STAGE_DECODE, MediaError


def crash() -> None:
    print("about to dereference NULL", file=sys.stderr, flush=True)
    ctypes.string_at(0)


def abort() -> None:
    os.abort()


def hang(seconds: float = 3600.0) -> None:
    time.sleep(seconds)


def hang_with_grandchild(pid_file: str) -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(pid_file, "w") as f:
        f.write(str(child.pid))
    time.sleep(3600)


def eat_memory(total_mb: int = 8192) -> int:
    chunks = []
    for _ in range(total_mb // 64):
        chunk = np.ones(64 * 1024 * 1024, np.uint8)  # touched, so it is really resident
        chunks.append(chunk)
    return len(chunks)


def raise_media_error() -> None:
    raise MediaError(STAGE_DECODE, "moov atom not found")


def raise_value_error(text: str) -> None:
    raise ValueError(text)


def big_array(n_mb: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, n_mb * 1024 * 1024, dtype=np.uint8)


def echo(**kwargs):
    return kwargs


def unpicklable():
    return lambda: None


def exit_hard(code: int) -> None:
    os._exit(code)


def flaky_probe(path: str):
    """A stand-in prober: the file name says how to misbehave."""
    from vidan.records import STAGE_PROBE, MediaInfo

    name = os.path.basename(path)
    if name.startswith("crash"):
        ctypes.string_at(0)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("bad"):
        raise MediaError(STAGE_PROBE, f"Invalid data found when processing input: {name}")
    if name.startswith("oops"):
        raise KeyError(name)
    if name.startswith("noisy"):
        os.write(1, b"garbage on stdout\n")  # C libraries sometimes print to fd 1
        print("on stdout too")
    return MediaInfo(path=path, size_bytes=0, container="x", duration_s=1.0, start_time_s=0.0, streams=())


def pid_probe(path: str) -> int:
    return os.getpid()


def kill_self_probe(path: str):
    if os.path.basename(path).startswith("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    return os.path.basename(path)


def broken_import_probe(path: str):
    return path


def import_torch() -> str:
    import torch

    return torch.__version__


# --- for the Ray failure tests: arguments whose unpickling, in the actor, misbehaves ----------


def die_noting(marker: str) -> None:
    """Note one more try in ``marker``, then end this process the way an OOM kill would."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def stall(seconds: float) -> None:
    time.sleep(seconds)


def pid() -> int:
    return os.getpid()


def say_and_fail(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
    raise ValueError(text)


def hang_noting(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)


def die_first_time(marker: str) -> int:
    """SIGKILL this process the first time (as the OOM killer would), answer the second."""
    tries = open(marker).read().count("\n") if os.path.exists(marker) else 0
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    if not tries:
        os.kill(os.getpid(), signal.SIGKILL)
    return tries + 1
