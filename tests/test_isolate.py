"""One bad file fails alone: crashes, hangs and memory hogs in a child become MediaErrors."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from vidan import synth
from vidan.media.isolate import DecoderFailed, probe_isolated, run_isolated
from vidan.records import STAGE_DECODE, STAGE_PROBE, MediaError, MediaInfo

T = "isolate_targets:"  # tests/isolate_targets.py; the child sees the parent's sys.path


def _fails(target: str, match: str, **kw) -> MediaError:
    """Run ``target`` isolated; it must fail with a message that ``match`` finds (re.search)."""
    kwargs = kw.pop("kwargs", {})
    with pytest.raises(MediaError, match=match) as err:
        run_isolated(T + target, kwargs, stage=STAGE_DECODE, **{"timeout_s": 20.0, **kw})
    return err.value


def test_returns_the_value():
    assert run_isolated(T + "echo", {"a": 1, "b": "x"}, stage=STAGE_DECODE, timeout_s=20) == {"a": 1, "b": "x"}


def test_large_array_comes_back_intact():
    value = run_isolated(T + "big_array", {"n_mb": 200, "seed": 3}, stage=STAGE_DECODE, timeout_s=60)
    expected = np.random.default_rng(3).integers(0, 256, 200 * 1024 * 1024, dtype=np.uint8)
    assert value.dtype == np.uint8 and np.array_equal(value, expected)


def test_segfault_is_a_media_error_with_stderr():
    err = _fails("crash", r"decoder process crashed \(SIGSEGV\)")
    assert err.stage == STAGE_DECODE
    assert err.message.startswith("decoder process crashed (SIGSEGV)")
    assert "about to dereference NULL" in err.message  # the child's last words


def test_abort_is_a_media_error():
    assert _fails("abort", "SIGABRT").message.startswith("decoder process crashed (SIGABRT)")


def test_hang_is_cut_at_the_time_limit():
    t0 = time.monotonic()
    err = _fails("hang", "timed out", timeout_s=2.0)
    assert time.monotonic() - t0 < 3.5
    assert err.message == "timed out after 2 s"


def test_the_child_failing_is_told_apart_from_the_file_failing():
    """A crash or hang is DecoderFailed (another decoder may read the file); an error the
    call itself raised is a plain MediaError."""
    assert isinstance(_fails("crash", "SIGSEGV"), DecoderFailed)
    assert isinstance(_fails("hang", "timed out", timeout_s=1.0), DecoderFailed)
    assert not isinstance(_fails("raise_media_error", "moov atom"), DecoderFailed)
    assert not isinstance(_fails("raise_value_error", "bad", kwargs={"text": "bad"}), DecoderFailed)


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    err = _fails("hang_with_grandchild", "timed out", kwargs={"pid_file": str(pid_file)}, timeout_s=3.0)
    assert err.message == "timed out after 3 s"
    pid = int(pid_file.read_text())
    gone = False
    deadline = time.monotonic() + 2
    while not gone and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            gone = True
    if not gone:
        try:
            os.kill(pid, signal.SIGKILL)  # do not leave it behind for the rest of the suite
        except ProcessLookupError:
            gone = True  # it died just after the last look
    assert gone, "the decoder's own child outlived the timeout"


def test_memory_limit():
    t0 = time.monotonic()
    err = _fails("eat_memory", "memory limit", kwargs={"total_mb": 8192}, memory_mb=512)
    assert err.message.startswith("exceeded memory limit of 512 MiB")
    assert time.monotonic() - t0 < 15


def test_media_error_keeps_stage_and_message():
    err = _fails("raise_media_error", "moov atom")
    assert (err.stage, err.message) == (STAGE_DECODE, "moov atom not found")


def test_other_exception_names_its_type():
    err = _fails("raise_value_error", "bad frame size", kwargs={"text": "bad frame size"})
    assert err.stage == STAGE_DECODE and err.message.startswith("ValueError: bad frame size")


def test_unpicklable_result_and_bad_exit_are_explained():
    assert "could not send the result back" in _fails("unpicklable", "could not send").message
    assert _fails("exit_hard", "decoder process exited with code 3", kwargs={"code": 3})
    assert _fails("no_such_function", "AttributeError: module 'isolate_targets' has no attribute")


def test_malformed_target_is_a_programming_error():
    with pytest.raises(ValueError, match="package.module:function"):
        run_isolated("no_colon", {}, stage=STAGE_DECODE, timeout_s=5)


def test_no_temporary_files_are_left(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    run_isolated(T + "echo", {"x": 1}, stage=STAGE_DECODE, timeout_s=20)
    _fails("crash", "SIGSEGV")
    probe_isolated(["/x/ok", "/x/crash"], target=T + "flaky_probe", timeout_s=10)
    assert os.listdir(tmp_path) == []


# --- many probes, one child --------------------------------------------------------


def test_probe_batch_survives_crash_hang_and_errors():
    paths = ["/v/ok1", "/v/crash", "/v/ok2", "/v/bad", "/v/hang", "/v/oops", "/v/noisy", "/v/ok3"]
    t0 = time.monotonic()
    out = probe_isolated(paths, timeout_s=2.0, target=T + "flaky_probe")
    assert time.monotonic() - t0 < 8
    assert len(out) == len(paths)
    ok = {p: r for p, r in zip(paths, out) if isinstance(r, MediaInfo)}
    assert sorted(ok) == ["/v/noisy", "/v/ok1", "/v/ok2", "/v/ok3"]
    assert all(r.path == p for p, r in ok.items())  # results stay in order
    errors = {p: r for p, r in zip(paths, out) if isinstance(r, MediaError)}
    assert all(e.stage == STAGE_PROBE for e in errors.values())
    assert errors["/v/crash"].message.startswith("prober crashed (SIGSEGV)")
    assert errors["/v/hang"].message == "timed out after 2 s"
    assert errors["/v/bad"].message == "Invalid data found when processing input: bad"
    assert errors["/v/oops"].message == "KeyError: 'oops'"


def test_probe_batch_uses_one_child_until_it_dies():
    pids = probe_isolated([f"/v/{i}" for i in range(50)], target=T + "pid_probe")
    assert len(set(pids)) == 1 and pids[0] != os.getpid()
    out = probe_isolated(["/v/a", "/v/kill", "/v/b"], target=T + "kill_self_probe")
    assert out[0] == "a" and out[2] == "b"
    assert out[1].message.startswith("prober crashed (SIGKILL)")


def test_probe_batch_that_cannot_start_fails_every_path_once():
    out = probe_isolated(["/v/a", "/v/b"], target="no_such_module_here:probe")
    assert [type(r) for r in out] == [MediaError, MediaError]
    assert "No module named 'no_such_module_here'" in out[0].message


def test_real_probe_in_batch(tmp_path):
    pytest.importorskip("vidan.media.probe")
    video = synth.write_video(tmp_path / "v.mp4", [synth.Scene(1.0, (10, 200, 10))])
    text = tmp_path / "t.mp4"
    text.write_text("hello")
    good, bad, missing = probe_isolated([str(video), str(text), str(tmp_path / "gone.mp4")])
    assert isinstance(good, MediaInfo) and good.has_video
    assert isinstance(bad, MediaError) and bad.stage == STAGE_PROBE
    assert bad.message.startswith("not a media file: Invalid data found"), bad.message
    assert isinstance(missing, MediaError) and missing.stage == STAGE_PROBE
    assert missing.message == "cannot read file: No such file or directory", missing.message


def test_import_that_needs_more_address_space_names_the_limit():
    err = _fails("import_torch", "memory limit", memory_mb=1024)
    assert err.message.startswith("exceeded memory limit of 1024 MiB (ImportError:")


# --- IsolatedWorker: one long-lived child for many calls (the decode stage's) -------------

def test_worker_runs_many_calls_in_one_child_and_each_bad_call_fails_alone():
    from vidan.media.isolate import IsolatedWorker

    w = IsolatedWorker(memory_mb=1024)
    try:
        first = w.call(T + "pid", {}, stage=STAGE_DECODE, timeout_s=20)
        assert first != os.getpid() and w.call(T + "pid", {}, stage=STAGE_DECODE, timeout_s=20) == first
        value = w.call(T + "big_array", {"n_mb": 64, "seed": 5}, stage=STAGE_DECODE, timeout_s=60)
        assert np.array_equal(value, np.random.default_rng(5).integers(0, 256, 64 * 1024 * 1024, dtype=np.uint8))

        outcomes = {}
        # only the hang is meant to meet its time limit: filling 1 GiB on a busy machine can take seconds
        for target, kw in [("crash", {}), ("hang", {}), ("eat_memory", {}), ("raise_media_error", {}),
                           ("exit_hard", {"code": 3})]:
            t0 = time.monotonic()
            with pytest.raises(MediaError) as err:
                w.call(T + target, kw, stage=STAGE_DECODE, timeout_s=2.0 if target == "hang" else 120.0)
            assert err.value.stage == STAGE_DECODE and time.monotonic() - t0 < 120
            outcomes[target] = err.value.message
            # the next call works, in the same child when this one survived, else a new one
            assert w.call(T + "echo", {"k": target}, stage=STAGE_DECODE, timeout_s=20) == {"k": target}
        assert outcomes["crash"].startswith("decoder process crashed (SIGSEGV)")
        assert "about to dereference NULL" in outcomes["crash"]
        assert outcomes["hang"] == "timed out after 2 s"
        assert outcomes["eat_memory"].startswith("exceeded memory limit of 1024 MiB")
        assert outcomes["raise_media_error"] == "moov atom not found"
        assert outcomes["exit_hard"] == "decoder process exited with code 3"
        assert w.call(T + "pid", {}, stage=STAGE_DECODE, timeout_s=20) != first  # replaced after the crash
    finally:
        w.close()


def test_worker_gives_a_call_whose_child_was_killed_from_outside_one_more_try(tmp_path):
    """SIGKILL comes from outside (OOM killer; Ray kills a worker's children just before the
    worker): the call runs once more in a fresh child, and fails only if that one dies too."""
    from vidan.media.isolate import IsolatedWorker

    w = IsolatedWorker()
    try:
        marker = str(tmp_path / "once")
        assert w.call(T + "die_first_time", {"marker": marker}, stage=STAGE_DECODE, timeout_s=20) == 2
        always = tmp_path / "always"
        with pytest.raises(MediaError) as err:
            w.call(T + "die_noting", {"marker": str(always)}, stage=STAGE_DECODE, timeout_s=20)
        assert err.value.message.startswith("decoder process crashed (SIGKILL)")
        assert len(set(always.read_text().split())) == 2  # two tries, two children
        with pytest.raises(MediaError, match=r"crashed \(SIGSEGV\)"):  # a crash of its own: no second try
            w.call(T + "crash", {}, stage=STAGE_DECODE, timeout_s=20)
    finally:
        w.close()


def test_worker_child_killed_while_starting_is_started_again(tmp_path):
    """Ray can end a worker while its decoding child is still starting (a cold import):
    the start-up is tried once more, as a call is."""
    import threading

    from vidan.media.isolate import IsolatedWorker

    w = IsolatedWorker()
    killed = []

    def kill_first_child():
        deadline = time.monotonic() + 20
        while not killed and time.monotonic() < deadline:
            proc = w._proc
            if proc is not None:  # set before the child has started: Python alone takes longer
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
            time.sleep(0.0005)

    t = threading.Thread(target=kill_first_child)
    t.start()
    try:
        pid = w.call(T + "pid", {}, stage=STAGE_DECODE, timeout_s=20)
        t.join()
        assert killed and pid != killed[0]
    finally:
        t.join()
        w.close()


def test_worker_error_carries_only_its_own_calls_stderr():
    from vidan.media.isolate import IsolatedWorker

    w = IsolatedWorker()
    try:
        with pytest.raises(MediaError, match="first words"):
            w.call(T + "say_and_fail", {"text": "first words"}, stage=STAGE_DECODE, timeout_s=20)
        with pytest.raises(MediaError) as err:
            w.call(T + "say_and_fail", {"text": "second words"}, stage=STAGE_DECODE, timeout_s=20)
        assert "second words" in err.value.message and "first words" not in err.value.message
    finally:
        w.close()


def test_worker_child_is_replaced_after_max_calls_and_gone_when_closed():
    from vidan.media.isolate import IsolatedWorker

    w = IsolatedWorker(max_calls=3)
    pids = [w.call(T + "pid", {}, stage=STAGE_DECODE, timeout_s=20) for _ in range(7)]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    w.close()
    assert not _alive(pids[6], within_s=5)


def test_worker_child_does_not_outlive_a_killed_parent(tmp_path):
    """A Ray actor killed mid-part (OOM, node lost) must not leave its decoder running."""
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    code = ("import sys; sys.path.insert(0, 'tests'); from vidan.media.isolate import IsolatedWorker; "
            f"IsolatedWorker().call('isolate_targets:hang_noting', {{'pid_file': {str(pid_file)!r}}}, "
            "stage='decode', timeout_s=3600)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        assert _alive(child, within_s=0)
    finally:
        parent.kill()
        parent.wait()
    assert not _alive(child, within_s=10)


def _alive(pid: int, within_s: float) -> bool:
    """Whether ``pid`` is still running after up to ``within_s`` seconds of waiting for it to end."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return False  # ended, not yet reaped
        except FileNotFoundError:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)
