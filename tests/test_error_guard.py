"""The guard that fails a test when an ERROR is logged: it must see errors in every test
phase, on a `vidan` command's stderr and in Ray's worker logs, and let benign lines pass."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from log_guard import RayWorkerLogs, check_stderr, error_lines


def test_error_lines_are_log_levels_not_words():
    text = textwrap.dedent("""\
        ERROR vidan: decoder died
        2026-12-01 13:09:38,940\tERROR worker.py:12 -- actor failed
        CRITICAL:root:out of disk
        WARNING vidan: 3 frames missing
        status failed; error_message: moov atom not found
        [h264 @ 0x55] error while decoding MB 3 4
        ERRORS_SEEN=0
        """)
    assert error_lines(text) == ["ERROR vidan: decoder died", "2026-12-01 13:09:38,940\tERROR worker.py:12 -- actor failed",
                                 "CRITICAL:root:out of disk"]


def test_cli_stderr_with_an_error_fails_the_test():
    check_stderr("100%|#####| 2/2 [00:03]\nWARNING vidan: note\n")
    with pytest.raises(pytest.fail.Exception, match="ERROR vidan: stage crashed"):
        check_stderr("loading models\nERROR vidan: stage crashed\n", what="vidan analyze")


def test_worker_logs_are_read_once_and_only_whole_lines(tmp_path):
    logs = RayWorkerLogs(str(tmp_path))
    err = tmp_path / "worker-abc-01-123.err"
    err.write_text(":job_id:01000000\n:actor_name:StageActor\nERROR vidan: first\n")
    (tmp_path / "raylet.err").write_text("ERROR not a worker's log\n")
    assert logs.new_error_lines() == ["worker-abc-01-123.err: ERROR vidan: first"]
    assert logs.new_error_lines() == []  # already reported
    with err.open("a") as f:
        f.write("WARNING vidan: fine\nERROR vidan: sec")  # the last line is still being written
    assert logs.new_error_lines() == []
    with err.open("a") as f:
        f.write("ond\n")
    (tmp_path / "worker-def-01-456.out").write_text("CRITICAL vidan: on stdout\n")
    assert logs.new_error_lines() == ["worker-abc-01-123.err: ERROR vidan: second",
                                      "worker-def-01-456.out: CRITICAL vidan: on stdout"]


def test_an_error_logged_in_a_ray_worker_is_found(ray_local, ray_worker_logs):
    """Through the real path: a worker set up like vidan's actors logs an error, and the
    guard finds the line in the session's worker logs."""

    @ray_local.remote(num_cpus=0)
    def log_an_error(text: str) -> None:
        import logging

        from workers.actors import worker_logging

        worker_logging()
        logging.getLogger("vidan").error(text)

    ray_local.get(log_an_error.remote("deliberate error from a worker"))
    found = ray_worker_logs.new_error_lines()  # read here, so the guard does not fail this test
    assert any(line.endswith("ERROR vidan: deliberate error from a worker") for line in found), found


_GUARDED = '''
import logging
import pytest

log = logging.getLogger("vidan")

@pytest.fixture(scope="module")
def broken_setup():
    log.error("error while the module fixture was built")

@pytest.fixture
def broken_teardown():
    yield
    log.error("error while the fixture was torn down")

def test_a_setup(broken_setup):
    pass

def test_b_call():
    log.error("error in the test body")

def test_c_teardown(broken_teardown):
    pass

def test_d_warning_is_fine():
    log.warning("only a warning")

@pytest.mark.allow_error_logs
def test_e_allowed():
    log.error("expected by this test")
'''


def test_an_error_in_any_phase_fails_the_test(pytester):
    here = Path(__file__).parent
    pytester.makeconftest((here / "conftest.py").read_text())
    pytester.makepyfile(log_guard=(here / "log_guard.py").read_text(), test_guarded=_GUARDED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    # c passes and then errors at teardown; d (a warning) and e (allowed) pass
    assert outcomes.get("passed") == 3 and outcomes.get("failed") == 1 and outcomes.get("errors") == 2, outcomes
    result.stdout.fnmatch_lines(["*ERROR at setup of test_a_setup*", "*error while the module fixture was built*"])
    result.stdout.fnmatch_lines(["*test_b_call*", "*error in the test body*"])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_c_teardown*", "*error while the fixture was torn down*"])
