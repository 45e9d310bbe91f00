"""Shared fixtures: one local Ray for the whole session, media built on the fly, and the
guard that fails a test when anything it ran logged an ERROR."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pytest

from log_guard import ErrorRecords, RayWorkerLogs

# Stay offline: model code must never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ("pytester",)

# --- an ERROR log fails the test: errors are never silent -----------------------------------
#
# In this process the handler sees every phase: an error logged while a module fixture is
# built (setup) or torn down fails that phase just as one logged in the test body does.
# Errors from `vidan` commands are checked by log_guard.run_vidan, and errors in Ray's
# worker processes by reading their log files after each test that used the shared Ray.

_ERRORS = ErrorRecords()
_RAY_LOGS: list[RayWorkerLogs] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_error_logs: the test logs an ERROR on purpose")
    logging.getLogger().addHandler(_ERRORS)


def pytest_unconfigure(config):
    logging.getLogger().removeHandler(_ERRORS)


def _check_phase(item, when: str) -> None:
    found = _ERRORS.take()
    if when == "call" or "ray_local" in getattr(item, "fixturenames", ()):
        # calls a test made to Ray actors have returned by now, and so have their log lines
        for logs in _RAY_LOGS:
            found += logs.new_error_lines()
    if found and item.get_closest_marker("allow_error_logs") is None:
        pytest.fail(f"ERROR logged during {when}:\n" + "\n".join(found), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    # errors logged between tests (at collection, say) are reported here too, not dropped
    result = yield
    _check_phase(item, "setup")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    _check_phase(item, "call")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    _check_phase(item, "teardown")
    return result


@pytest.fixture(autouse=True)
def no_error_logs(caplog):
    """Warnings and above reach caplog for every test (the guard itself is the hooks above)."""
    caplog.set_level(logging.WARNING)
    yield


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray on 127.0.0.1 with 2 CPUs, started once (it costs ~4 s)."""
    from workers.ray_executor import init_ray

    import ray

    # A short private temp dir: Ray's socket paths must stay under ~100 characters, and a
    # stale /tmp/ray left by a killed session must not be picked up.
    temp = tempfile.mkdtemp(prefix="vray", dir="/tmp")
    init_ray(num_cpus=2, temp_dir=temp)
    logs = RayWorkerLogs(os.path.join(temp, "session_latest", "logs"))
    _RAY_LOGS.append(logs)
    yield ray
    late = logs.new_error_lines()  # from module fixtures torn down after their last test
    _RAY_LOGS.remove(logs)
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    if late:
        pytest.fail("ERROR logged in Ray workers:\n" + "\n".join(late), pytrace=False)


@pytest.fixture
def ray_worker_logs(ray_local) -> RayWorkerLogs:
    """The shared Ray's worker logs, as the guard reads them."""
    return _RAY_LOGS[-1]
