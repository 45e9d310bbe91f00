"""A messy folder through `vidan analyze`, as a user runs it: every file one row with the
right status and a message that names the cause; the batch finishes; no traceback."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest

from broken_media import ts_without_sps
from log_guard import run_vidan
from vidan import synth
from vidan.report import load_report
from vidan.synth import Scene

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WEIRD = "it's a \"test\" $(touch pwned) ;\nnew line.mp4"


def _ff(*args):
    synth.run_ffmpeg([str(a) for a in args])


def _testsrc(path, seconds, size="160x120", rate=25, *codec):
    _ff("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}", *codec, path)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    d = tmp_path_factory.mktemp("messy")
    speech = synth.concat_audio(d / "speech.wav", [(0.3, synth.speech_clip("weather"))])
    synth.write_video(d / "good.mp4", [Scene(6.0, synth.photo("coffee"))], audio=speech)
    _ff("-i", speech, "-c:a", "aac", d / "audio_only.m4a")
    speech.unlink()
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("hello, I am a text file\n" * 20)
    from PIL import Image

    Image.fromarray(synth.photo("chelsea")).save(d / "image.mp4", format="PNG")
    # moov at the end (PyAV's default): cut in half, the index is gone
    synth.write_video(d / "whole.mp4", [Scene(6.0, synth.photo("rocket"))])
    data = (d / "whole.mp4").read_bytes()
    (d / "truncated_index.mp4").write_bytes(data[: len(data) // 2])
    # moov first: cut, the index promises frames the file no longer has
    _ff("-i", d / "whole.mp4", "-c", "copy", "-movflags", "+faststart", d / "fast.mp4")
    data = (d / "fast.mp4").read_bytes()
    (d / "truncated_data.mp4").write_bytes(data[: int(len(data) * 0.55)])
    (d / "whole.mp4").unlink()
    (d / "fast.mp4").unlink()
    _testsrc(d / "garbage.ts", 6, "320x240", 25, "-c:v", "libx264", "-g", "25")
    raw = bytearray((d / "garbage.ts").read_bytes())
    mid = len(raw) // 2
    raw[mid: mid + 20000] = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    (d / "garbage.ts").write_bytes(bytes(raw))
    ts_without_sps(d / "no_sps.ts")  # probes, then fails to decode: inside the visual actor on Ray
    _testsrc(d / "av1.mkv", 2, "160x120", 25, "-c:v", "libaom-av1", "-cpu-used", "8", "-b:v", "200k")
    _testsrc(d / "vp9.webm", 2, "160x120", 25, "-c:v", "libvpx-vp9", "-deadline", "realtime")
    # 3 s, one keyframe: decoded in full by decord (2 s would take PyAV's keyframe path)
    _testsrc(d / "hevc.mp4", 3, "160x120", 25, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none")
    _testsrc(d / "mpeg4.avi", 2, "160x120", 25, "-vf", "setsar=64/45", "-c:v", "mpeg4")  # squeezed pixels
    synth.write_timecode_video(d / "vfr.mp4", [0.0, 0.04, 0.5, 0.55, 1.7, 1.72, 3.0, 4.1])
    _ff("-display_rotation", "90", "-i", d / "vfr.mp4", "-c", "copy", d / "rotated.mp4")
    _testsrc(d / "tiny.mp4", 0.3, "160x120", 25, "-c:v", "libx264")
    _testsrc(d / "big.mp4", 1, "3840x2160", 10, "-c:v", "libx264", "-preset", "ultrafast")
    _ff("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=300:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=500:duration=3",
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-c:a", "aac", "-ac:a:1", "6",
        d / "multi_audio.mkv")
    synth.write_video(d / WEIRD, [Scene(2.0, synth.photo("astronaut"))])
    synth.write_video(d / "plain.mp4", [Scene(2.0, (200, 30, 30))])
    os.rename(d / "plain.mp4", os.fsencode(d) + b"/bad-\xff-name.mp4")  # a name that is not UTF-8
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "loop")
    os.symlink(d / "good.mp4", d / "sub" / "link-to-good.mp4")
    return d


@pytest.fixture(scope="module", params=["local", "ray"])
def run(request, messy, tmp_path_factory):
    """The folder through each executor: in the command's own process (``--local``), and on
    Ray actors (the shared session, by ``--address``: its worker logs are checked too)."""
    out = tmp_path_factory.mktemp("out")
    where = ["--local"]
    if request.param == "ray":
        where = ["--address", request.getfixturevalue("ray_local").get_runtime_context().gcs_address]
    proc = run_vidan("analyze", messy, "--out", out, "--quiet", *where, timeout=900, cwd=messy)
    return proc, load_report(out)


def _row(rep, name):
    rows = rep.videos[rep.videos.path.str.endswith(name)]
    assert len(rows) == 1, (name, list(rep.videos.path))
    return rows.iloc[0]


def test_batch_finishes_with_exit_1_and_no_traceback(run):
    proc, rep = run
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_file_one_row_no_duplicates_from_symlinks(run, messy):
    _, rep = run
    assert rep.videos.path.is_unique and rep.videos.video_id.is_unique
    assert len(rep.videos) == 20
    reasons = dict(zip(rep.skipped.path, rep.skipped.reason))
    link = str(messy / "sub" / "link-to-good.mp4")
    assert link in reasons and "duplicate" in reasons[link]
    assert any("loop" in r for r in reasons.values())


@pytest.mark.parametrize("name, stage, words", [
    ("empty.mp4", None, "empty"),
    ("text.mp4", "probe", "invalid data"),
    ("image.mp4", "probe", "still image"),
    ("truncated_index.mp4", "probe", "moov"),
    ("no_sps.ts", "decode", "video stream has no picture size"),
])
def test_unreadable_files_fail_with_the_real_cause(run, name, stage, words):
    _, rep = run
    row = _row(rep, name)
    assert row.status == "failed"
    if stage:
        assert row.error_stage == stage
    assert words in row.error_message.lower(), row.error_message
    # the cause in plain words, as the decoder or prober said it, not wrapped in a class name
    assert not re.match(r"[A-Z]\w*(Error|Exception): ", row.error_message), row.error_message
    assert "see stderr" not in row.error_message.lower()


def test_cut_short_file_is_partial_and_says_what_was_lost(run):
    _, rep = run
    row = _row(rep, "truncated_data.mp4")
    assert row.status == "partial", (row.error_message, row.notes)
    assert any("ends at" in n or "frames decoded" in n for n in row.notes), row.notes
    assert row.n_segments > 0


def test_garbage_in_the_middle_still_analysed(run):
    _, rep = run
    row = _row(rep, "garbage.ts")
    assert row.status in ("ok", "partial")
    assert row.n_segments > 0 and row.frames_sampled >= 4


@pytest.mark.parametrize("name", ["av1.mkv", "vp9.webm", "hevc.mp4", "mpeg4.avi", "vfr.mp4", "rotated.mp4",
                                  "tiny.mp4", "big.mp4", "multi_audio.mkv", "good.mp4", "audio_only.m4a",
                                  "new line.mp4", "bad-\\xff-name.mp4"])
def test_unusual_but_valid_files_are_ok(run, name):
    _, rep = run
    row = _row(rep, name)
    assert row.status == "ok", (row.error_stage, row.error_message, list(row.notes))
    segs = rep.segments[rep.segments.video_id == row.video_id]
    assert len(segs) == row.n_segments > 0
    assert segs.end_s.max() == pytest.approx(row.duration_s)


def test_backend_and_stream_facts_are_recorded(run):
    _, rep = run
    assert _row(rep, "av1.mkv").frame_backend == "pyav"
    assert _row(rep, "hevc.mp4").frame_backend == "pyav"  # the default backend
    assert _row(rep, "rotated.mp4").rotation in (90, 270)
    assert _row(rep, "mpeg4.avi").sample_aspect == "64/45"
    assert pd.isna(_row(rep, "big.mp4").sample_aspect)  # square
    assert _row(rep, "multi_audio.mkv").n_audio_streams == 2
    big = _row(rep, "big.mp4")
    assert (big.width, big.height) == (3840, 2160)
    audio_only = _row(rep, "audio_only.m4a")
    assert not audio_only.has_video
    segs = rep.segments[rep.segments.video_id == audio_only.video_id]
    assert "weather" in " ".join(t for t in segs.transcript if t).lower()
    assert segs.visual_embedding.isna().all() and segs.has_text.any()


def test_names_are_never_run_as_commands(run, messy):
    assert not (messy / "pwned").exists()
    assert not os.path.exists("pwned")
