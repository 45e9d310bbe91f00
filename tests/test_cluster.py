"""`vidan analyze --address` against a separate multi-node Ray cluster (simulated on this
machine with ray.cluster_utils, on loopback), as a user would submit to a cluster."""

import os
import sys
import textwrap

import pytest

from log_guard import check_stderr
from orchestrate import run_script
from vidan import load_report, synth
from vidan.synth import Scene
from vidan.wer import word_error_rate

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_analyze_on_a_two_node_cluster(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    # long enough for the whole 5.4 s sentence, so every word of the known text can be heard
    synth.write_video(src / "cat.mp4", [Scene(6.0, synth.photo("chelsea"))], audio=synth.speech_clip("cat"))
    synth.write_video(src / "silent.mp4", [Scene(3.0, synth.photo("coffee"))])
    out = tmp_path / "out"
    # The cluster lives in its own process (this test process may already hold a Ray);
    # the CLI then connects to it by address.
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        from ray.cluster_utils import Cluster
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
        cluster.add_node(num_cpus=2)
        try:
            proc = subprocess.run([sys.executable, "-m", "vidan", "analyze", {str(src)!r}, "--out", {str(out)!r},
                                   "--quiet", "--address", cluster.address], capture_output=True, text=True)
            sys.stderr.write(proc.stderr)
            sys.exit(proc.returncode)
        finally:
            cluster.shutdown()
    """)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = run_script([sys.executable, "-c", script], timeout=540, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_stderr(proc.stderr, what="vidan analyze --address")  # the command's stderr, passed through
    rep = load_report(out)
    assert sorted(rep.videos.status) == ["ok", "ok"]
    segs = rep.segments
    said = " ".join(t for t in segs[segs.path.str.endswith("cat.mp4")].sort_values("start_s").transcript if t)
    assert word_error_rate(synth.speech_text("cat"), said) <= 0.2, said
    assert segs[segs.path.str.endswith("silent.mp4")].transcript.isna().all()
