"""Frame times on files whose clocks are unusual: variable rates, holes, B-frames in AVI.

Truth comes from the pixels: every frame of a timecode video shows the time it was
made for (``synth.timecode_image``), so a frame reported at t must show t.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from vidan import synth
from vidan.config import FrameConfig
from vidan.media.ffmpeg_bin import ffmpeg_exe
from vidan.media.frames import decode_part as _decode_part
from vidan.media.frames.clock import _missing_frames
from vidan.media.probe import probe
from vidan.records import Span

BOTH = ["decord", "pyav"]


def decode_full(*args, **kwargs):
    """``decode_part`` decoding every frame through the named backend (no keyframe path):
    the tests below are about that path's frame choice and clocks."""
    return _decode_part(*args, fast=False, **kwargs)
FAST, SLOW = 30, 5  # frames a second in the two halves of the joined clip
HALF_S = 3.0


def thirty_then_five(d, suffix: str):
    """3 s at 30 fps then 3 s at 5 fps, joined without re-encoding; each frame shows its
    time in the joined file (the concat demuxer starts the second clip where the first ends)."""
    a = synth.write_timecode_video(d / f"fast{suffix}", [i / FAST for i in range(int(HALF_S * FAST))])
    b = synth.write_timecode_video(d / f"slow{suffix}", [HALF_S + i / SLOW for i in range(int(HALF_S * SLOW))])
    return synth.join_without_reencoding(d / f"joined{suffix}", [a, b])


def scanned_frames(path, span, backend, fps=60.0, fast=False):
    """decode_part scanning faster than the frame rate, so every frame is scanned once."""
    seen = []
    out = _decode_part(path, probe(path), span, FrameConfig(backend=backend, scan_fps=fps, sample_fps=2.0),
                       on_scan=lambda t, img: seen.append((round(t * 1000), synth.read_timecode(img))), fast=fast)
    return out, seen


def assert_each_frame_at_its_time(out, seen):
    wrong = [(t, ms) for t, ms in seen if abs(t - ms) > 1]
    assert not wrong, f"{len(wrong)} of {len(seen)} scanned frames at the wrong time (time, shown): {wrong[:5]}"
    model = [(round(t * 1000), synth.read_timecode(img)) for t, img in zip(out.times_s, out.images)]
    assert all(abs(t - ms) <= 1 for t, ms in model), model


# --- variable frame rate: no frames are missing -----------------------------------------

@pytest.fixture(scope="module", params=[".mp4", ".mkv"])
def joined(request, tmp_path_factory):
    return thirty_then_five(tmp_path_factory.mktemp("vfr"), request.param)


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("span", [Span(0.0, 6.0), Span(1.0, 4.0), Span(2.5, 6.0)], ids=["whole", "across", "tail"])
def test_thirty_then_five_fps_is_complete(joined, backend, span):
    out, seen = scanned_frames(joined, span, backend)
    assert out.backend == backend and out.notes == []
    truth = [t for t in [i / FAST for i in range(90)] + [HALF_S + i / SLOW for i in range(15)]
             if span.start_s <= t < span.end_s]
    assert out.frames_decoded == len(truth)
    assert [ms for _, ms in seen] == [round(t * 1000) for t in truth]  # every frame, in order
    assert_each_frame_at_its_time(out, seen)


@pytest.mark.parametrize("backend", BOTH)
def test_frames_cut_from_a_constant_rate_stream_are_reported(tmp_path, backend):
    kept = [i / 25 for i in range(150) if not 50 <= i < 60]
    path = synth.write_timecode_video(tmp_path / "holed.mkv", kept)
    out, seen = scanned_frames(path, Span(0.0, 6.0), backend, fps=50.0)
    assert out.notes == ["10 frames missing (gaps in a constant-rate stream)"]
    assert_each_frame_at_its_time(out, seen)


def _rounded(times, tick):
    return list(np.round(np.asarray(times) / tick) * tick)


def test_missing_frames_from_times_alone():
    rng = np.random.default_rng(0)
    cfr = np.arange(300) / 25
    ntsc = np.arange(300) * 1001 / 30000
    # several constant rates one after another, as joined clips are
    pieces = np.cumsum(np.r_[0, [1 / 30] * 40, [1 / 5] * 6, [1 / 15] * 20, [1 / 25] * 30, [1 / 60] * 50, [1 / 10] * 8])
    # a rate that slides from 30 to 10 fps and back
    sliding = np.cumsum(np.r_[0, np.linspace(1 / 30, 1 / 10, 80), np.linspace(1 / 10, 1 / 30, 80)])
    # a phone: 30 fps with capture jitter, a dark stretch at 15 fps, 90 kHz clock
    phone = np.cumsum(np.r_[0, 1 / 30 + rng.normal(0, 0.0015, 60), 1 / 15 + rng.normal(0, 0.002, 30),
                            1 / 30 + rng.normal(0, 0.0015, 60)])
    for name, times in {"pieces": pieces, "sliding": sliding, "phone": phone}.items():
        for tick in (1 / 90000, 1 / 1000):  # mp4-like and millisecond (mkv, webm, flv) time bases
            assert _missing_frames(_rounded(times, tick)) == 0, (name, tick)
    for tick in (1 / 90000, 1 / 1000):
        assert _missing_frames(_rounded(cfr, tick)) == 0
        assert _missing_frames(_rounded(np.delete(cfr, range(100, 112)), tick)) == 12
        assert _missing_frames(_rounded(np.delete(ntsc, [40, 41, 42, 200]), tick)) == 4
        # two holes close together, and a hole inside the 25 fps piece of the joined rates
        assert _missing_frames(_rounded(np.delete(cfr, [100, 101, 104]), tick)) == 3
        assert _missing_frames(_rounded(np.delete(pieces, range(80, 83)), tick)) == 3


# --- B-frames in AVI: the container stores no presentation times ----------------------

@pytest.fixture(scope="module")
def timecode_source(tmp_path_factory):
    """10.8 s at 25 fps, H.264 with B-frames in MP4 (presentation times stored)."""
    return synth.write_timecode_video(tmp_path_factory.mktemp("src") / "src.mp4", [i / 25 for i in range(270)])


def _reencoded(src, path, *codec):
    synth.run_ffmpeg(["-i", src, *codec, "-g", "48", path])
    return path


def _reorder_depth(path) -> int:
    import av

    with av.open(str(path)) as c:
        return int(c.streams.video[0].codec_context.reorder_depth)


@pytest.fixture(scope="module", params=["mpeg4_bf2.avi", "h264_bf2.avi", "h264_bf3.mp4"])
def bframes(request, timecode_source, tmp_path_factory):
    codec = {"mpeg4_bf2.avi": ["-c:v", "mpeg4", "-bf", "2", "-q:v", "3", "-vtag", "XVID"],
             "h264_bf2.avi": ["-c:v", "libx264", "-bf", "2"],
             "h264_bf3.mp4": ["-c:v", "libx264", "-bf", "3"]}[request.param]
    path = _reencoded(timecode_source, tmp_path_factory.mktemp("bf") / request.param, *codec)
    assert _reorder_depth(path) > 0, "the file must have reordered frames for this test to mean anything"
    return path


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("span", [Span(0.0, 10.8), Span(3.3, 7.7)], ids=["whole", "seeked"])
def test_b_frames_keep_every_frame_at_its_time(bframes, backend, span):
    out, seen = scanned_frames(bframes, span, backend, fps=50.0)
    assert out.notes == []
    truth = [i / 25 for i in range(270) if span.start_s <= i / 25 < span.end_s]
    assert out.frames_decoded == len(truth)
    assert [ms for _, ms in seen] == [round(t * 1000) for t in truth]
    assert_each_frame_at_its_time(out, seen)
    if bframes.suffix == ".avi" and backend == "decord":
        # decord's times for these are ffmpeg's guesses: PyAV's decode clock takes over
        assert out.backend == "pyav" and "no presentation timestamps" in out.fallback


@pytest.mark.parametrize("span", [Span(0.0, 10.8), Span(3.3, 7.7)], ids=["whole", "seeked"])
def test_keyframe_path_with_b_frames(bframes, span):
    """A keyframe every 48 frames (1.92 s): the MP4 takes the keyframe path and every
    frame it hands out shows the time reported for it; the AVIs (no presentation times)
    are decoded in full, whatever the keyframes."""
    import av

    out, seen = scanned_frames(bframes, span, "decord", fps=50.0, fast=True)
    assert out.notes == []
    truth = [i / 25 for i in range(270) if span.start_s <= i / 25 < span.end_s]
    assert out.frames_decoded == len(truth)
    assert_each_frame_at_its_time(out, seen)
    if bframes.suffix == ".avi":
        assert [ms for _, ms in seen] == [round(t * 1000) for t in truth]
        return
    with av.open(str(bframes)) as c:
        s = c.streams.video[0]
        keys = {round(float(p.pts * s.time_base) * 1000) for p in c.demux(s) if p.size and p.is_keyframe}
    assert out.backend == "pyav" and len(seen) < len(truth)  # non-reference B-frames are not decoded
    assert {round(t * 1000) for t in out.times_s} <= keys


def _ffmpeg_frame_times(path) -> list[float]:
    """The times ffmpeg itself gives each frame it outputs (showinfo's pts_time)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-vf", "showinfo", "-f", "null",
                           "-"], capture_output=True, text=True, check=True)
    return [float(t) for t in re.findall(r"pts_time:\s*(-?[\d.]+)", proc.stderr)]


def test_xvid_avi_follows_the_files_own_clock(timecode_source, tmp_path):
    """libxvid (packed B-frames, N-VOPs) through ffmpeg writes empty 'dropped frame'
    chunks, so its clock is not the source's: times follow the file's clock, which is
    ffmpeg's own frame times less the decoder's reorder delay."""
    if "libxvid" not in subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                                       text=True).stdout:
        pytest.skip("this ffmpeg has no libxvid")
    path = _reencoded(timecode_source, tmp_path / "xvid.avi", "-c:v", "libxvid", "-bf", "2", "-q:v", "4")
    depth = _reorder_depth(path)
    assert depth > 0
    clock = [t - depth / 25 for t in _ffmpeg_frame_times(path)]
    for backend in BOTH:
        out, seen = scanned_frames(path, Span(0.0, 10.8), backend, fps=50.0)
        assert out.notes == []
        shown = [ms for _, ms in seen]
        assert shown == sorted(set(shown)) and len(shown) == len(clock)  # every frame once, in display order
        np.testing.assert_allclose([t / 1000 for t, _ in seen], clock, atol=1e-3)


# --- through the pipeline ----------------------------------------------------------------

def _sampled(true_times, spans, fps):
    """Reference: per part, the frame displayed at start + (k + 0.5) / fps, each once."""
    picks = []
    for span in spans:
        inside = [t for t in true_times if span.start_s <= t < span.end_s]
        k = 0
        while span.start_s + (k + 0.5) / fps < span.end_s:
            target = span.start_s + (k + 0.5) / fps
            pick = max([t for t in inside if t <= target], default=inside[0])
            if pick not in picks:
                picks.append(pick)
            k += 1
    return picks


def test_pipeline_reports_vfr_and_b_frame_avi_ok_at_true_times(tmp_path):
    import vidan
    from vidan.config import Config
    from vidan.segments import plan_parts

    src = tmp_path / "in"
    src.mkdir()
    vfr = thirty_then_five(tmp_path, ".mkv").rename(src / "thirty_then_five.mkv")
    source = synth.write_timecode_video(tmp_path / "src.mp4", [i / 25 for i in range(150)])
    divx = _reencoded(source, src / "divx.avi", "-c:v", "mpeg4", "-bf", "2", "-q:v", "3", "-vtag", "XVID")
    h264 = _reencoded(source, src / "h264.avi", "-c:v", "libx264", "-bf", "2")
    truth = {vfr.name: [round(i / FAST, 3) for i in range(90)] + [HALF_S + i / SLOW for i in range(15)],
             divx.name: [i / 25 for i in range(150)], h264.name: [i / 25 for i in range(150)]}
    # parts of 4 s: the first part of the joined file is mostly 30 fps with a 5 fps tail
    config = Config().replace(asr={"backend": "none"}, limits={"part_s": 4.0}, frames={"sample_fps": 2.0})
    vidan.analyze(src, out=tmp_path / "out", config=config, executor="local")
    report = vidan.load_report(tmp_path / "out")
    for row in report.videos.itertuples():
        name = row.path.rsplit("/", 1)[-1]
        assert (row.status, list(row.notes if row.notes is not None else [])) == ("ok", []), (name, row.notes)
        segs = report.segments[report.segments.video_id == row.video_id]
        reported = sorted(t for ts in segs.frame_times for t in ts)
        want = _sampled(truth[name], plan_parts(row.duration_s, 4.0), 2.0)
        np.testing.assert_allclose(reported, sorted(want), atol=1e-6, err_msg=name)
        shown = np.asarray(truth[name])
        assert all(np.abs(shown - t).min() < 1e-6 for t in segs.keyframe_s), name
    assert sorted(r.rsplit("/", 1)[-1] for r in report.videos.path) == sorted(truth)
