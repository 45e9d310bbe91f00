"""Run a script that starts its own Ray cluster, in a process group of its own.

Its output goes to files, not pipes: a Ray process the script's cluster left behind
keeps the pipes it inherited open, and reading a pipe to its end then waits for that
process, not for the script (seen as a 600-s hang after the script had finished). The
group is killed once the script ends, so nothing it started outlives the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile


def run_script(args: list, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, start_new_session=True, **kwargs)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            kill_group(proc)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if rc is None:
        raise AssertionError(f"{args[:2]} still running after {timeout:g} s; its stderr ends:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(args, rc, stdout, stderr)


def kill_group(proc: subprocess.Popen) -> None:
    """End ``proc`` (started with ``start_new_session=True``) and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
