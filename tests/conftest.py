"""Shared fixtures: one local Ray for the whole session, media built on the fly, and the
guard that fails a test when anything it ran logged an ERROR."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time

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


def pytest_collection_modifyitems(session, config, items):
    """Modules with slow tests first, each module's tests kept together (its fixtures are
    built once): the two test processes (``make test``) then end together instead of one
    waiting out a long cluster test alone at the end."""
    slow = {item.module for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.module not in slow)


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
    from workers.connect import init_ray

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


# --- when a test on the shared Ray fails: what Ray itself saw ------------------------------
#
# A failure that depends on Ray (an actor that never came up, a call that never returned)
# is rarely reproducible; CI shows only pytest's output. Put the actors' states and the
# raylet's and GCS's warnings of the last minutes into the failure report.

_RAY_NOISE = ("Disconnecting client due to connection error",)


def _ray_state_report(logs_dir: str, since: float) -> str:
    import ray

    out = [f"cluster {ray.cluster_resources()}", f"available {ray.available_resources()}"]
    try:
        from ray._private.state import state  # the GCS's table: works without a dashboard

        for a in state.actor_table(None).values():
            if a.get("State") != "DEAD" or (a.get("EndTime") or 0) / 1000 > since:
                death = re.search(r'error_message: "([^"]*)', str(a.get("DeathCause") or ""))
                out.append(f"actor {a.get('ActorClassName')} {a.get('ActorID', '')[:8]} {a.get('State')} "
                           f"pid={a.get('Pid')} restarts={a.get('NumRestarts')} "
                           f"start={a.get('StartTime')} end={a.get('EndTime')} death={death and death[1]!r}")
    except Exception as e:  # a private API: its absence must not hide the test's own failure
        out.append(f"(actor table unavailable: {e!r})")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    for name in ("raylet.out", "gcs_server.out"):
        try:
            with open(os.path.join(logs_dir, name), errors="replace") as f:
                lines = [ln.rstrip() for ln in f if ln[:1] == "[" and ln[1:20] >= stamp
                         and (" W " in ln[:40] or " E " in ln[:40]) and not any(n in ln for n in _RAY_NOISE)]
        except OSError:
            continue
        out += [f"{name}: {ln[:400]}" for ln in lines[-40:]]
    return "\n".join(out)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and "ray_local" in getattr(item, "fixturenames", ()) and _RAY_LOGS:
        import ray

        if ray.is_initialized():
            try:
                report.sections.append(("Ray state at the failure",
                                        _ray_state_report(_RAY_LOGS[-1].logs_dir, call.start - 60)))
            except Exception as e:
                report.sections.append(("Ray state at the failure", f"unavailable: {e!r}"))
    return report
