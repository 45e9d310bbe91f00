"""Losing workers, a node or the driver costs time, never data.

A real multi-node Ray cluster on loopback (``ray.cluster_utils.Cluster``, in its own
process, as a user's cluster would be), a real ``vidan analyze --address`` driver, and
real faults: worker processes killed with SIGKILL mid-run, a whole node removed mid-run,
and the driver itself killed and run again. Every video ends in the report exactly once.
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

import vidan
from log_guard import check_stderr
from orchestrate import run_script
from vidan import synth
from vidan.synth import Scene

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PHOTOS = ["rocket", "coffee", "chelsea", "astronaut", "camera", "hubble_deep_field"]

# The orchestrator: owns the cluster, runs the driver, injects the faults when the report
# shows progress, and reports what it did on stdout.
ORCHESTRATE = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    from pathlib import Path
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    src, out, cfg, budget = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    t0 = time.monotonic()

    def say(what):  # timestamped, so a failure shows where the time went
        print(f"[{time.monotonic() - t0:6.1f} s] {what}", file=sys.stderr, flush=True)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2), cluster.add_node(num_cpus=2)]
    raylets = [str(p.process.pid) for n in [cluster.head_node, *workers] for p in n.all_processes["raylet"]]
    # --debug: the planner's and the fault handling's events, to read when something hangs
    cmd = [sys.executable, "-m", "vidan", "analyze", src, "--out", out, "--config", cfg, "--quiet", "--debug",
           "--address", cluster.address]
    commits = Path(out) / "_commits"

    def n_commits():
        return len(list(commits.glob("*.json"))) if commits.is_dir() else 0

    def wait_for(n, proc, limit=120):
        end = time.monotonic() + limit
        while time.monotonic() < end and proc.poll() is None and n_commits() < n:
            time.sleep(0.1)
        return proc.poll() is None

    def driver(log):  # its stderr to a file: a pipe nobody reads while it runs could fill and block it
        say(f"driver started, its stderr in {log}")
        return subprocess.Popen(cmd, stderr=open(log, "w"))

    did = []
    rc = None
    try:
        # 1. the driver is killed after its first commit, then run again
        proc = driver("driver1.err")
        if wait_for(1, proc):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            did.append(f"driver killed after {n_commits()} commit(s)")
        else:
            did.append("driver finished before it could be killed")
        say(did[-1])
        proc = driver("driver2.err")
        # 2. worker processes killed mid-run (this cluster's only: children of its raylets);
        # 3. a whole node removed mid-run
        base = n_commits()
        if wait_for(base + 1, proc):
            killed = subprocess.run(["pkill", "-9", "-P", ",".join(raylets), "-f", "ray::Stage[A]ctor"]).returncode == 0
            did.append(f"actor workers killed: {killed}")
            say(did[-1])
        if wait_for(base + 2, proc):
            cluster.remove_node(workers[0], allow_graceful=False)
            did.append("node removed")
            say(did[-1])
        try:
            rc = proc.wait(timeout=max(10.0, budget - (time.monotonic() - t0)))
            say(f"driver exited with {rc}")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            did.append("driver hung")
            say(f"driver still running after {budget:g} s: killed")
        sys.stderr.write(Path("driver2.err").read_text())
        print(json.dumps({"rc": rc, "did": did}))
    finally:
        cluster.shutdown()
""")


def test_killed_workers_a_lost_node_and_a_killed_driver_lose_and_duplicate_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        synth.write_video(src / f"clip{i:02d}.mp4", [Scene(2.0 + 0.1 * i, synth.photo(PHOTOS[i % len(PHOTOS)]))],
                          size=(160, 120), fps=10, seed=i)
    out = tmp_path / "out"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("asr: {backend: none}\nsegments: {plan: fixed, window_s: 1}\ncommit: {videos: 1}\n")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # the orchestrator stops a hung driver after 420 s and still reports; 540 s bounds the rest
    proc = run_script([sys.executable, "-c", ORCHESTRATE, str(src), str(out), str(cfg), "420"], timeout=540,
                      env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        try:
            videos = vidan.load_report(out).videos
            bad = videos[videos.status != "ok"][["path", "status", "error_stage", "error_message"]].to_string()
        except Exception as e:  # a hung driver may have left no report to read
            bad = f"no report: {e}"
        pytest.fail(f"driver rc {result['rc']}; did {result['did']}\n{bad}\n{proc.stderr[-6000:]}", pytrace=False)
    rep = vidan.load_report(out)
    check_stderr(proc.stderr, what="the driver under faults")
    assert any(d.startswith("driver killed") for d in result["did"]), result
    assert "actor workers killed: True" in result["did"], result
    assert "node removed" in result["did"], result

    assert rep.videos.video_id.is_unique and len(rep.videos) == 12
    assert set(rep.videos.status) == {"ok"}, rep.videos[["path", "status", "error_message"]]
    assert rep.segments.groupby("video_id").segment_index.apply(lambda s: sorted(s) == list(range(len(s)))).all()
    # the second run resumed: it analysed only what the killed one had not committed
    runs = rep.runs
    assert len(runs) == 2 and runs[0]["status"] == "running" and runs[1]["status"] == "finished"
    second = runs[1]["counts"]
    assert second["unchanged"] >= 1 and second["new"] + second["unchanged"] == 12
