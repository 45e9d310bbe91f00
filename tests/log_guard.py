"""The suite's "an ERROR log fails the test" guard, for every place an error can be logged:
this process (any test phase), a `vidan` command a test runs, and Ray's worker processes.

Kept apart from conftest.py so tests can import it (to run the CLI, or to test the guard).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import subprocess
import sys
from typing import Optional, Sequence

# A level name as a word of its own: "ERROR vidan: ..." (the CLI's format), "ERROR:x:..."
# (logging's default), "...\tERROR file.py:12 -- ..." (Ray's). Never "error_message" or
# ffmpeg's lower-case "error while decoding".
_ERROR_LINE = re.compile(r"(?:^|\s)(?:ERROR|CRITICAL)(?=[\s:])")

# Lines Ray writes as errors while everything is fine. Empty so far: add a pattern only
# with a comment saying when Ray writes it and why it is harmless.
BENIGN: Sequence[re.Pattern] = ()


def error_lines(text: str) -> list[str]:
    """The lines of ``text`` that a logger wrote at ERROR or above (known Ray noise left out)."""
    return [line for line in text.splitlines()
            if _ERROR_LINE.search(line) and not any(p.search(line) for p in BENIGN)]


# --- this process -------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Collects ERROR records from every logger that reaches the root, in any test phase."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        out = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return out


# --- a vidan command ----------------------------------------------------------------------


def run_vidan(*args, cwd=None, timeout: float = 300, env: Optional[dict] = None,
              allow_errors: bool = False) -> subprocess.CompletedProcess:
    """``python -m vidan ARGS``, as a user runs it; an ERROR line on its stderr fails the test."""
    proc = subprocess.run([sys.executable, "-m", "vidan", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)
    check_stderr(proc.stderr, allow_errors=allow_errors, what="vidan " + " ".join(map(str, args[:1])))
    return proc


def check_stderr(stderr: str, *, allow_errors: bool = False, what: str = "subprocess") -> None:
    import pytest

    found = error_lines(stderr)
    if found and not allow_errors:
        pytest.fail(f"ERROR logged by {what}:\n" + "\n".join(found), pytrace=False)


# --- Ray workers --------------------------------------------------------------------------


class RayWorkerLogs:
    """New ERROR lines in a Ray session's worker logs (``logs/worker-*.err`` and ``.out``:
    Ray sends each worker's stderr and stdout there), read from where the last look ended."""

    def __init__(self, logs_dir: str):
        self.logs_dir = logs_dir
        self._read: dict[str, int] = {}

    def new_error_lines(self) -> list[str]:
        found = []
        for path in sorted(glob.glob(os.path.join(self.logs_dir, "worker-*.err"))
                           + glob.glob(os.path.join(self.logs_dir, "worker-*.out"))):
            start = self._read.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            # a line still being written is read whole next time
            end = data.rfind(b"\n") + 1
            self._read[path] = start + end
            found += [f"{os.path.basename(path)}: {line}"
                      for line in error_lines(data[:end].decode("utf-8", errors="replace"))]
        return found
