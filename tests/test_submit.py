"""`vidan submit`, `vidan jobs` and `vidan analyze --address` against a real Ray head that
this module starts on 127.0.0.1 with `ray start --head`, token authentication on (as
`ray start` turns it on when a token exists), as a user on one machine would."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from log_guard import RayWorkerLogs, error_lines, run_vidan
from vidan import load_report, synth
from vidan.synth import Scene

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = ["--asr", "none", "--segments", "fixed", "--window", "1", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    def __init__(self, temp: str, gcs: int, dashboard: int, token: str, env: dict, proc: subprocess.Popen):
        self.temp, self.gcs, self.dashboard, self.token, self.env, self.proc = temp, gcs, dashboard, token, env, proc
        self.address = f"127.0.0.1:{gcs}"
        self.url = f"http://127.0.0.1:{dashboard}"

    def api(self, path: str, token: str | None = "own"):
        """The job server's REST API, as Ray's own client calls it."""
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("Authorization", "Bearer " + (self.token if token == "own" else token))
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def jobs(self) -> list[dict]:
        return self.api("/api/jobs/")


def _stop(proc: subprocess.Popen) -> None:
    # `ray stop` would stop every Ray on the machine (the session's own Ray included):
    # the head runs with --block in a process group of its own, and that group is ended.
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            time.sleep(1)  # let the group's other members act on the signal too
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def head():
    # Short temp dir: Ray's socket paths must stay under ~100 characters.
    temp = tempfile.mkdtemp(prefix="vhd", dir="/tmp")
    token = secrets.token_hex(32)
    token_file = Path(temp) / "auth_token"
    token_file.write_text(token)
    gcs, dashboard, client, agent = (_free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    # Every port on loopback (item 6: nothing vidan's tests start listens elsewhere); the
    # token where Ray's documentation says a token may be named; vidan's Python first on
    # the PATH, as in an activated environment, since a job's entrypoint runs `python`.
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_TOKEN_PATH=str(token_file),
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
               VIDAN_TEST_CANARY=str(Path(temp) / "canary"))
    log = open(Path(temp) / "head.log", "wb")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
         "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
         "--dashboard-agent-listen-port", str(agent), "--num-cpus", "2", "--temp-dir", temp,
         "--disable-usage-stats"],
        # started in the checkout, where `import vidan` from the current folder would find
        # this tree: the jobs must import what they were shipped even so
        cwd=Path(__file__).resolve().parents[1], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    h = Head(temp, gcs, dashboard, token, env, proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail("ray start --head ended:\n" + (Path(temp) / "head.log").read_text()[-3000:])
            try:
                h.api("/api/version")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the head's job server did not answer in 120 s")
                time.sleep(1)
        logs = RayWorkerLogs(os.path.join(temp, "session_latest", "logs"))
        yield h
        found = logs.new_error_lines()
        assert not found, "ERROR logged in the head's Ray workers:\n" + "\n".join(found)
    finally:
        _stop(proc)
        log.close()
        subprocess.run(["rm", "-rf", temp], check=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    # A folder whose name is shell code: the job's entrypoint goes through a shell, and
    # it must reach vidan as a name (else the canary file appears, and no such folder).
    src = tmp_path_factory.mktemp("in") / "clips $(touch $VIDAN_TEST_CANARY); echo 'x"
    src.mkdir()
    synth.write_video(src / "coffee.mp4", [Scene(2.0, synth.photo("coffee"))])
    synth.write_video(src / "cat.mp4", [Scene(2.0, synth.photo("chelsea"))])
    return src


def _complete(out: Path, src: Path) -> None:
    rep = load_report(out)
    v = rep.videos
    assert sorted(v.path) == sorted(str(p) for p in src.glob("*.mp4")), v.path.tolist()
    assert (v.status == "ok").all(), v[["path", "status", "error_message"]].to_dict("records")
    segs = rep.segments
    for path in v.path:
        spans = sorted(zip(segs[segs.path == path].start_s, segs[segs.path == path].end_s))
        assert spans and spans[0][0] == pytest.approx(0, abs=0.05) and spans[-1][1] == pytest.approx(2, abs=0.1), spans


def test_head_requires_the_token(head):
    # Without this, the tests below would pass whether or not vidan sends the token.
    with pytest.raises(urllib.error.HTTPError, match="401"):
        head.api("/api/jobs/", token=None)


def test_submit_runs_this_vidan_on_the_cluster(head, clips, tmp_path):
    out = tmp_path / "report"
    before = len(head.jobs())
    proc = run_vidan("submit", clips, "--out", out, "--address", head.url, "--submission-id", "nightly-1",
                     "--wait-for-job", *FAST, env=head.env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "nightly-1"
    assert not Path(head.env["VIDAN_TEST_CANARY"]).exists(), "a path given to submit ran as shell code on the cluster"
    _complete(out, clips)
    job = head.api("/api/jobs/nightly-1")
    assert job["status"] == "SUCCEEDED"
    # The job's driver joined this cluster (it has a Ray job id here) rather than
    # analysing on a private Ray of its own beside it.
    assert job["job_id"], job
    assert len(head.jobs()) == before + 1

    # A scheduled run submitted again is refused, and nothing runs twice.
    again = run_vidan("submit", clips, "--out", out, "--address", head.url, "--submission-id", "nightly-1", *FAST,
                      env=head.env, cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    assert "already submitted" in again.stderr and "nightly-1" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert again.stdout == ""
    assert [j["submission_id"] for j in head.jobs()].count("nightly-1") == 1
    assert len(head.jobs()) == before + 1
    from vidan.report import read_runs

    assert len(list(read_runs(out))) == 1

    status = run_vidan("jobs", "status", "nightly-1", "--address", head.url, env=head.env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status.stdout + status.stderr
    logs = run_vidan("jobs", "logs", "nightly-1", "--address", head.url, env=head.env)
    assert logs.returncode == 0, logs.stderr
    assert "-m vidan analyze" in logs.stdout, logs.stdout
    assert not error_lines(logs.stdout), logs.stdout
    followed = run_vidan("jobs", "logs", "nightly-1", "--follow", "--address", head.url, env=head.env, timeout=60)
    assert followed.returncode == 0 and "-m vidan analyze" in followed.stdout, followed.stdout + followed.stderr
    stop = run_vidan("jobs", "stop", "nightly-1", "--address", head.url, env=head.env)
    assert stop.returncode == 0 and "not running" in stop.stdout, stop.stdout + stop.stderr
    missing = run_vidan("jobs", "status", "no-such-job", "--address", head.url, env=head.env)
    assert missing.returncode == 2 and "no-such-job" in missing.stderr and "Traceback" not in missing.stderr


def test_job_imports_the_shipped_packages(head, tmp_path):
    # The cluster's Python has vidan installed (this checkout, editable), and the head was
    # started from the checkout: the job must still import the packages it was shipped,
    # so a cluster runs the code that submitted it.
    (tmp_path / "empty").mkdir()
    script = (
        "import time\n"
        "from vidan.cluster import job_runtime_env\n"
        "from workers.ray_jobs import Jobs\n"
        f"jobs = Jobs({head.url!r})\n"
        "job = jobs.submit(\"python -c 'import vidan, workers; print(vidan.__file__); print(workers.__file__)'\","
        f" job_runtime_env({str(tmp_path / 'empty')!r}))\n"
        "while jobs.info(job).status not in ('SUCCEEDED', 'FAILED', 'STOPPED'):\n"
        "    time.sleep(0.5)\n"
        "print(jobs.info(job).status)\n"
        "print(jobs.logs(job))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=head.env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "SUCCEEDED", proc.stdout
    files = [line for line in lines if line.endswith("__init__.py")]
    assert len(files) == 2, proc.stdout
    for f in files:
        assert f.startswith(head.temp) and "runtime_resources" in f, f


def test_analyze_joins_a_head_by_address(head, clips, tmp_path):
    # `ray start --head` turned token authentication on; naming the head by address must
    # find the token the documented way (here RAY_AUTH_TOKEN_PATH), not retry and crash.
    out = tmp_path / "report"
    proc = run_vidan("analyze", clips, "--out", out, "--address", head.address, *FAST, env=head.env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _complete(out, clips)


def test_a_cluster_that_cannot_be_used_is_one_line_and_exit_2(head, clips, tmp_path):
    closed = _free_port()
    cases = {
        "cannot reach a Ray cluster at 127.0.0.1": ["analyze", clips, "--out", tmp_path / "a",
                                                    "--address", f"127.0.0.1:{closed}", *FAST],
        "is a job server (dashboard) address": ["analyze", clips, "--out", tmp_path / "b", "--address", head.url,
                                                *FAST],
        "cannot reach a Ray cluster at http://127.0.0.1": ["submit", clips, "--out", tmp_path / "c",
                                                           "--address", f"http://127.0.0.1:{closed}", *FAST],
        "credentials are not sent with a job": ["submit", clips, "--out", tmp_path / "d", "--address", head.url,
                                                "--storage-option", "secret_access_key=hunter2", *FAST],
    }
    for message, args in cases.items():
        t0 = time.monotonic()
        proc = run_vidan(*args, env=head.env, cwd=tmp_path)
        assert proc.returncode == 2, (message, proc.stderr)
        assert proc.stderr.startswith("vidan: error: ") and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert time.monotonic() - t0 < 20, message
        assert "hunter2" not in proc.stderr + proc.stdout
    assert not any((tmp_path / n).exists() for n in "abcd")  # refused before any report folder was made
    assert len([j for j in head.jobs() if "hunter2" in j["entrypoint"]]) == 0

    wrong = {**head.env, "RAY_AUTH_TOKEN": "not-the-token"}
    proc = run_vidan("analyze", clips, "--out", tmp_path / "e", "--address", head.address, *FAST, env=wrong)
    assert proc.returncode == 2, proc.stderr
    assert "refused this client's token" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "e").exists()
    proc = run_vidan("jobs", "status", "nightly-1", "--address", head.url, env=wrong)
    assert proc.returncode == 2 and "refused this client's token" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- what a job carries, without a cluster ----------------------------------------------

NASTY = ["a b.mp4", "$(touch x).mp4", "`id`.mp4", "it's.mp4", 'say "hi".mp4', "a;b&c|d>e.mp4", "line\nbreak.mp4",
         "-starts-with-dash.mp4", "*.mp4", "~user.mp4", "back\\slash.mp4", "tab\there.mp4", ""]


def test_entrypoint_reaches_vidan_verbatim_through_a_real_shell(tmp_path):
    from vidan.cluster import analyze_entrypoint

    # a stand-in for `python` that prints the arguments the shell handed it
    show = tmp_path / "show-argv"
    show.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    show.chmod(0o755)
    args = [f"/data/{name}" for name in NASTY] + ["--out", "s3://bucket/report", "--window", "1.0"]
    out = subprocess.run(["sh", "-c", analyze_entrypoint(args, python=str(show))], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    assert out.split("\0")[:-1] == ["-m", "vidan", "analyze", *args]
    assert not (tmp_path / "x").exists()


def test_a_job_ships_only_the_two_packages_and_stays_small():
    from vidan.cluster import SHIP_EXCLUDES, job_runtime_env

    env = job_runtime_env("/somewhere")
    assert sorted(Path(p).name for p in env["py_modules"]) == ["vidan", "workers"]
    assert env["working_dir"] == "/somewhere" and "__pycache__" in env["excludes"]
    shipped = [f for p in env["py_modules"] for f in Path(p).rglob("*") if f.is_file()
               and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".parquet")]
    assert {"__pycache__", "*.pyc", "*.parquet"} <= set(SHIP_EXCLUDES)
    # Ray refuses a package past ~100 MiB; a model file dropped into the package would
    # break every submit, so it is caught here first
    assert sum(f.stat().st_size for f in shipped) < 20 * 2**20


def test_which_cluster_and_which_job_server(monkeypatch):
    from vidan.cluster import ClusterError, cluster_address, job_server_address

    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert cluster_address(None) is None  # a private Ray on 127.0.0.1
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # what Ray's job server gives a job's driver
    assert cluster_address(None) == "10.0.0.5:6379"
    assert cluster_address("127.0.0.1:7000") == "127.0.0.1:7000"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    with pytest.raises(ClusterError, match=r"RAY_ADDRESS=http://10\.0\.0\.5:8265 is a job server"):
        cluster_address(None)
    assert job_server_address(None) == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265/")
    assert job_server_address(None) == "http://head:8265"  # Ray's order: the API server first
    assert job_server_address("http://other:8265") == "http://other:8265"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    with pytest.raises(ClusterError, match="name the cluster's job server"):
        job_server_address(None)
