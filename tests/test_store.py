"""Staging and atomic publish: a reader never sees a partial or doubled report."""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from vidan.report import load_report
from vidan.store import OutputError, ReportWriter


def _video(i, run):
    return {"video_id": f"v{i}", "path": f"/x/{i}.mp4", "status": "ok", "config_hash": "h", "run_id": run}


def _publish(out, run, n):
    w = ReportWriter(out, run)
    w.write_rows("videos", [_video(i, run) for i in range(n)])
    w.publish({"run_id": run, "finished_at": run})


def test_publish_then_rerun_replaces_without_duplicates(tmp_path):
    _publish(tmp_path, "r1", 3)
    assert len(pd.read_parquet(tmp_path / "videos")) == 3
    _publish(tmp_path, "r2", 2)
    videos = pd.read_parquet(tmp_path / "videos")
    assert sorted(videos.video_id) == ["v0", "v1"] and set(videos.run_id) == {"r2"}
    rep = load_report(tmp_path)
    assert [r["run_id"] for r in rep.runs] == ["r1", "r2"]
    assert rep.segments.empty and list(rep.segments.columns)  # empty dataset keeps its schema
    assert not (tmp_path / ".staging").exists()


def test_one_writer_at_a_time(tmp_path):
    w = ReportWriter(tmp_path, "a")
    with pytest.raises(OutputError, match="another vidan run"):
        ReportWriter(tmp_path, "b")
    w.abort()
    ReportWriter(tmp_path, "c").abort()


def test_unusable_output_is_an_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        ReportWriter(f / "out", "r")


def test_kill_9_before_publish_leaves_previous_report_intact(tmp_path):
    _publish(tmp_path, "r1", 3)
    code = textwrap.dedent(f"""
        import os, signal
        from vidan.store import ReportWriter
        w = ReportWriter({str(tmp_path)!r}, "r2")
        w.write_rows("videos", [{{"video_id": "new", "path": "/n", "status": "ok", "config_hash": "h", "run_id": "r2"}}] * 5)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    videos = pd.read_parquet(tmp_path / "videos")
    assert sorted(videos.video_id) == ["v0", "v1", "v2"]
    # the next run cleans what the killed one staged
    _publish(tmp_path, "r3", 1)
    assert not (tmp_path / ".staging").exists()
    assert list(pd.read_parquet(tmp_path / "videos").video_id) == ["v0"]
