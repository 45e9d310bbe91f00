"""`python -m workers.local_cluster`: the README's way to watch the stage graph place its
actors on one machine (CPU nodes and a node declaring a GPU), used as a user would: the
cluster in one process, `vidan analyze --address` in another, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import vidan
from log_guard import run_vidan
from orchestrate import kill_group
from vidan import synth
from vidan.synth import Scene

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        said = path.read_text()
        if text in said:
            return said
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} from the cluster after {timeout:g} s; it said:\n{path.read_text()[-3000:]}")


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def test_decoders_on_cpu_nodes_encoders_on_the_gpu_node_then_ctrl_c_stops_everything(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    speech = synth.speech_clip("coffee")
    synth.write_video(src / "talk.mp4", [Scene(2.0, synth.photo("coffee")), Scene(2.5, synth.photo("rocket"))],
                      size=(192, 144), audio=speech)
    synth.write_video(src / "quiet.mp4", [Scene(3.0, synth.photo("chelsea"))], size=(192, 144))

    with tempfile.NamedTemporaryFile("w+", suffix=".out", dir=tmp_path, delete=False) as out, \
            tempfile.NamedTemporaryFile("w+", suffix=".err", dir=tmp_path, delete=False) as err:
        # a session of its own: its raylets can be found (and, if the test fails, killed) as a group
        proc = subprocess.Popen([sys.executable, "-m", "workers.local_cluster", "--cpu-nodes", "1", "--cpus", "2",
                                 "--gpu-nodes", "1", "--gpu-node-cpus", "1"], cwd=ROOT, stdout=out, stderr=err,
                                stdin=subprocess.PIPE, text=True, start_new_session=True)
    try:
        said = _wait_for(Path(out.name), "run:", proc, timeout=180)
        address = said.split("local Ray cluster at ", 1)[1].split(":", 2)
        address = f"{address[0]}:{address[1]}"
        assert address.startswith("127.0.0.1:"), said
        assert "cpu-1 (2 CPU)" in said and "gpu-1 (1 CPU, 1 GPU (not real))" in said, said
        proc.stdin.write("cpu\n")  # a node joins, as typed at the prompt
        proc.stdin.flush()
        _wait_for(Path(out.name), "added cpu-2 (2 CPU)", proc, timeout=120)

        run = run_vidan("analyze", src, "--out", tmp_path / "report", "--quiet", "--address", address, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        videos = vidan.load_report(tmp_path / "report").videos
        assert sorted(Path(p).name for p in videos.path) == ["quiet.mp4", "talk.mp4"]
        assert (videos.status == "ok").all()

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 0, Path(err.name).read_text()[-3000:]
        rows = {}
        for line in Path(out.name).read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0] in ("head", "cpu-1", "cpu-2", "gpu-1"):
                rows[cells[0]] = cells[2]
        assert set(rows) == {"head", "cpu-1", "cpu-2", "gpu-1"}, Path(out.name).read_text()
        cpu = rows["cpu-1"] + rows["cpu-2"]
        assert "vidan:decode:cpu" in cpu and "vidan:audio:cpu" in cpu, rows
        assert "vidan:vision:cuda" in rows["gpu-1"] and "vidan:asr:cuda" in rows["gpu-1"], rows
        assert "decode" not in rows["gpu-1"] and "vision" not in cpu and "asr" not in cpu, rows
        # every process the cluster started has stopped with it
        assert _group_gone(proc.pid, timeout=60)
    finally:
        kill_group(proc)
