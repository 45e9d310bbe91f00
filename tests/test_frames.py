"""decode_part(): the right frames, at their true times, upright, from either backend."""

from __future__ import annotations

import time
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from vidan import synth
from vidan.config import FrameConfig
from vidan.media import frames as frames_mod
from vidan.media.frames import BACKENDS, decode_part, model_size, upright
from vidan.media.frames.pyav_backend import _PyAVDecoder

_decode_part = decode_part
from vidan.media.probe import probe
from vidan.records import STAGE_DECODE, MediaError, MediaInfo, Span, StreamInfo

BOTH = ["decord", "pyav"]


def decode_full(*args, **kwargs):
    """``decode_part`` decoding every frame through the named backend (no keyframe path):
    the tests below are about that path's frame choice and clocks."""
    return _decode_part(*args, fast=False, **kwargs)

# Irregular frame times: bursts, gaps of almost a second, and a regular run.
VFR_TIMES = [0.0, 0.033, 0.5, 0.52, 0.54, 1.3, 1.31, 2.0, 2.04, 2.08, 2.9, 3.0, 3.05, 3.7, 4.6, 4.61, 4.7, 5.5]
VFR_TIMES += [round(5.6 + 0.04 * i, 3) for i in range(25)]  # 5.6 .. 6.56 at 25 fps


def displayed(times, span, fps, offset, origin=None):
    """Reference: for each target ``origin + (k + offset) / fps`` in the span (origin: the
    span's start), the last frame in the span at or before it (else the first)."""
    origin = span.start_s if origin is None else origin
    inside = [t for t in times if span.start_s <= t < span.end_s]
    targets = [origin + (k + offset) / fps for k in range(int(span.end_s * fps) + 2)]
    picks = []
    for target in (x for x in targets if span.start_s <= x < span.end_s):
        shown = [t for t in inside if t <= target]
        pick = shown[-1] if shown else inside[0]
        if not picks or picks[-1] != pick:
            picks.append(pick)
    return picks


def timecode_video_with_keyframes(path, times, gop: int):
    """``synth.write_timecode_video`` with a keyframe every ``gop`` frames, so spans seek."""
    import av

    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height = 320, 240
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = tb
        stream.codec_context.gop_size = gop
        for t in times:
            frame = av.VideoFrame.from_ndarray(synth.timecode_image(round(t * 1000)), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module", params=["one_gop", "gop4"])
def vfr(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("vfr")
    if request.param == "one_gop":
        return synth.write_timecode_video(d / "vfr.mp4", VFR_TIMES)
    return timecode_video_with_keyframes(d / "vfr_gop4.mp4", VFR_TIMES, gop=4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s at 25 fps, keyframe every second, index at the front."""
    d = tmp_path_factory.mktemp("clip")
    return synth.lavfi(d / "clip.mp4", "testsrc=size=320x240:rate=25", 4.0, "-c:v", "libx264", "-g", "25",
                       "-movflags", "+faststart")


def cfg(**kw) -> FrameConfig:
    return FrameConfig(**{"fallback": False, **kw})


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("span", [Span(0.0, 6.6), Span(2.02, 4.65)], ids=["whole", "middle"])
def test_vfr_frames_are_the_ones_displayed_at_each_time(vfr, backend, span):
    info = probe(vfr)
    scans = []
    out = decode_full(vfr, info, span, cfg(backend=backend, sample_fps=4.0, scan_fps=8.0),
                      on_scan=lambda t, img: scans.append((t, img)))
    assert out.backend == backend and out.notes == []
    want = displayed(VFR_TIMES, span, 4.0, 0.5)
    np.testing.assert_allclose(out.times_s, want, atol=1e-6)
    # the picture really is that frame, not a neighbour
    assert [synth.read_timecode(img) for img in out.images] == [round(t * 1000) for t in out.times_s]
    assert out.frames_decoded == sum(span.start_s <= t < span.end_s for t in VFR_TIMES)
    # the shot scanner sees the frame displayed at every 1/8 s of the file's clock, in order
    np.testing.assert_allclose([t for t, _ in scans], displayed(VFR_TIMES, span, 8.0, 0.0, origin=0.0), atol=1e-6)
    assert [synth.read_timecode(img) for _, img in scans] == [round(t * 1000) for t, _ in scans]
    assert all(img.shape == (72, 96, 3) and img.dtype == np.uint8 for _, img in scans)


def test_backends_agree_on_times_and_pictures(clip):
    info = probe(clip)
    a = decode_full(clip, info, Span(1.3, 3.9), cfg(backend="decord"))
    b = decode_full(clip, info, Span(1.3, 3.9), cfg(backend="pyav"))
    np.testing.assert_array_equal(a.times_s, b.times_s)
    np.testing.assert_allclose(a.times_s, [1.8, 2.8, 3.8], atol=1e-9)  # the frames shown at 1.8, 2.8, 3.8 s
    assert a.images.shape == b.images.shape == (3, 224, 299, 3)
    assert np.abs(a.images.astype(int) - b.images.astype(int)).mean() < 12
    assert a.frames_decoded == b.frames_decoded == a.frames_expected == 65


def _orientation_probe_image() -> np.ndarray:
    """Black picture with a white block top left and a grey block bottom left."""
    img = np.zeros((240, 320, 3), np.uint8)
    img[:80, :100] = 255
    img[160:, :100] = 128
    return img


def _ffmpeg_upright(path) -> np.ndarray:
    """How ffmpeg itself shows the first frame (it applies the display matrix)."""
    import subprocess

    from vidan.media.ffmpeg_bin import ffmpeg_exe

    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8)


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("ccw", [90, -90, 180])
def test_rotated_video_comes_out_upright(tmp_path, backend, ccw):
    plain = synth.write_video(tmp_path / "plain.mp4", [synth.Scene(1.0, _orientation_probe_image(), pan=False)],
                              fps=10)
    rotated = tmp_path / "phone.mp4"
    synth.run_ffmpeg(["-display_rotation", str(ccw), "-i", plain, "-c", "copy", rotated])
    info = probe(rotated)
    out = decode_full(rotated, info, Span(0, 1.0), cfg(backend=backend))
    img = out.images[0]
    tall = ccw in (90, -90)
    assert img.shape == ((299, 224, 3) if tall else (224, 299, 3))
    # ground truth: ffmpeg's own upright picture, resized to ours
    raw = _ffmpeg_upright(rotated)
    h, w = (320, 240) if tall else (240, 320)
    ref = np.asarray(Image.fromarray(raw.reshape(h, w, 3)).resize((img.shape[1], img.shape[0])))
    assert np.abs(ref.astype(int) - img.astype(int)).mean() < 8
    # and plainly: the white block is where a viewer sees it
    bright = np.argwhere(img.mean(axis=-1) > 200).mean(axis=0) / img.shape[:2]
    expected = {90: (0.8, 0.2), -90: (0.2, 0.8), 180: (0.8, 0.8)}[ccw]  # (row, col) fractions
    assert np.allclose(bright, expected, atol=0.15)


def test_av1_falls_back_to_pyav_with_a_note(tmp_path):
    path = synth.lavfi(tmp_path / "av1.mkv", "testsrc=size=320x240:rate=25", 1.0, "-c:v", "libsvtav1",
                       "-preset", "12")
    info = probe(path)
    out = decode_full(path, info, Span(0, 1.0), FrameConfig(backend="decord"))
    assert out.backend == "pyav" and len(out.times_s) == 1
    assert out.fallback.startswith("decord failed (") and out.fallback.endswith("used pyav")
    with pytest.raises(MediaError, match="decord: ") as err:
        decode_full(path, info, Span(0, 1.0), FrameConfig(backend="decord", fallback=False))
    assert err.value.stage == STAGE_DECODE and err.value.message.startswith("decord: ")


def test_avi_with_garbage_decord_timestamps_uses_pyav(tmp_path):
    path = synth.lavfi(tmp_path / "old.avi", "testsrc=size=320x240:rate=25", 2.0, "-c:v", "mpeg4", "-bf", "2",
                       "-vtag", "DX50")
    info = probe(path)
    out = decode_full(path, info, Span(0, 2.0), FrameConfig(backend="decord"))
    ref = decode_full(path, info, Span(0, 2.0), cfg(backend="pyav"))
    assert out.backend == "pyav" and "timestamps" in out.fallback and out.notes == []
    np.testing.assert_array_equal(out.times_s, ref.times_s)


def test_fallback_carries_on_where_the_first_backend_died(clip, monkeypatch):
    info = probe(clip)
    span = Span(0.5, 3.5)
    full_scans = []
    ref = decode_full(clip, info, span, cfg(backend="pyav"), on_scan=lambda t, _: full_scans.append(t))

    class DiesHalfway:
        name = "decord"

        def iter_frames(self, path, info, span, size, notes):
            for i, frame in enumerate(BACKENDS["pyav"].iter_frames(path, info, span, size, notes)):
                if i == 40:
                    raise RuntimeError("decoder crashed")
                yield frame

    monkeypatch.setitem(BACKENDS, "decord", DiesHalfway())
    scans = []
    out = decode_full(clip, info, span, FrameConfig(backend="decord"), on_scan=lambda t, _: scans.append(t))
    assert out.backend == "pyav"
    assert out.fallback == "decord failed (RuntimeError: decoder crashed), used pyav" and out.notes == []
    np.testing.assert_array_equal(out.times_s, ref.times_s)
    np.testing.assert_array_equal(out.images, ref.images)
    assert scans == full_scans  # no repeats, no holes, still in order
    assert out.frames_decoded == ref.frames_decoded == 75


def test_both_backends_failing_names_both_causes(tmp_path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    info = MediaInfo(str(path), 50_000, "mov,mp4,m4a,3gp,3g2,mj2", 5.0, 0.0, (StreamInfo(0, "video", "h264"),),
                     video_codec="h264", width=320, height=240, frame_rate="25/1")
    with pytest.raises(MediaError, match="Invalid data found") as err:
        decode_full(path, info, Span(0, 5.0), FrameConfig())
    msg = err.value.message
    assert err.value.stage == STAGE_DECODE
    assert "decord: " in msg and "pyav: " in msg and "Invalid data found" in msg


def test_no_video_stream_is_a_decode_error(tmp_path):
    path = synth.lavfi(tmp_path / "a.wav", "sine", 0.5)
    with pytest.raises(MediaError, match="no video stream"):
        decode_full(path, probe(path), Span(0, 0.5), FrameConfig())


@pytest.mark.parametrize("backend", BOTH)
def test_4k_is_scaled_in_the_decoder(tmp_path, backend):
    path = synth.lavfi(tmp_path / "uhd.mp4", "testsrc2=size=3840x2160:rate=10", 1.0, "-c:v", "libx264",
                       "-preset", "ultrafast")
    info = probe(path)
    out = decode_full(path, info, Span(0, 1.0), cfg(backend=backend, max_decode_side=1280))
    assert out.backend == backend
    assert out.images.shape == (1, 224, 398, 3) and out.images.dtype == np.uint8
    assert out.images.std() > 20  # a real picture, not a blank


@pytest.mark.parametrize("backend", BOTH)
def test_truncated_file_decodes_what_exists_and_says_so(tmp_path, clip, backend):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the index at the front still claims 4 s
    info = probe(cut)
    assert info.duration_s == pytest.approx(4.0)
    out = decode_full(cut, info, Span(0, 4.0), FrameConfig(backend=backend))
    assert 0 < len(out.times_s) and out.times_s.max() < 3.0
    assert 0 < out.frames_decoded < out.frames_expected == 100
    ends = [n for n in out.notes if n.startswith("video stream ends at ")]
    assert ends and ends[0].endswith("s of 4.0 s")
    late = decode_full(cut, info, Span(3.2, 4.0), FrameConfig(backend=backend))
    assert len(late.times_s) == 0 and late.images.shape == (0, 224, 299, 3)
    assert any(n.startswith("video stream ends at ") for n in late.notes)


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_garbage_in_the_middle_is_skipped(tmp_path, suffix):
    src = synth.lavfi(tmp_path / f"src{suffix}", "testsrc=size=320x240:rate=25", 4.0, "-c:v", "libx264", "-g", "25")
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 6000] = np.random.default_rng(1).integers(0, 256, 6000, dtype=np.uint8).tobytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(bytes(data))
    info = probe(bad)
    for backend in BOTH:
        out = decode_full(bad, info, Span(0, 4.0), FrameConfig(backend=backend))
        assert out.times_s.max() > 3.4  # decoding went on past the damage
        assert out.frames_decoded < 100
        assert out.notes, f"{backend}: loss not reported"
        if out.backend == "pyav" and suffix == ".mp4":
            assert any("corrupt packets skipped" in n for n in out.notes)


@pytest.mark.parametrize("backend", BOTH)
def test_clip_shorter_than_a_sampling_interval_gives_one_frame(tmp_path, backend):
    path = synth.write_timecode_video(tmp_path / "blink.mp4", [0.0, 0.1, 0.2])
    out = decode_full(path, probe(path), Span(0, 0.3), cfg(backend=backend))
    assert out.times_s.tolist() == [0.0] and synth.read_timecode(out.images[0]) == 0


def test_stream_without_timestamps_is_timed_by_its_rate(tmp_path):
    path = synth.lavfi(tmp_path / "raw.h264", "testsrc=size=320x240:rate=25", 2.0, "-c:v", "libx264", "-f", "h264")
    info = probe(path)
    out = decode_full(path, info, Span(0.0, 2.0), FrameConfig(backend="decord"))
    assert out.backend == "pyav"
    assert "no presentation timestamps; times from decode order at the stream rate" in out.notes
    np.testing.assert_allclose(out.times_s, [0.48, 1.48], atol=1e-9)
    middle = decode_full(path, info, Span(1.0, 1.6), cfg(backend="pyav"))
    np.testing.assert_allclose(middle.times_s, [1.48], atol=1e-9)


def test_scan_frames_arrive_in_order_at_scan_rate(clip):
    info = probe(clip)
    for backend in BOTH:
        seen = []
        decode_full(clip, info, Span(0, 4.0), cfg(backend=backend, scan_fps=8.0, scan_width=64),
                    on_scan=lambda t, img: seen.append((t, img.shape)))
        times = np.array([t for t, _ in seen])
        assert len(times) == 32 and np.all(np.diff(times) > 0)
        assert np.all(np.abs(np.diff(times) - 0.125) <= 0.04 + 1e-9)  # 25 fps frames nearest each 1/8 s
        assert {shape for _, shape in seen} == {(48, 64, 3)}


def test_model_size_and_upright():
    c = FrameConfig(model_size=224, max_decode_side=1280)
    assert model_size(1920, 1080, 0, c) == (398, 224)
    assert model_size(1920, 1080, 90, c) == (224, 398)  # shown portrait
    assert model_size(160, 120, 0, c) == (299, 224)  # small inputs are brought up to model size
    assert model_size(3000, 500, 0, c) == (448, 75)  # panoramas: long side capped at 2x
    assert model_size(1920, 1080, 0, replace(c, max_decode_side=300)) == (300, 169)
    img = np.arange(6).reshape(2, 3)
    assert upright(img, 90).tolist() == [[3, 0], [4, 1], [5, 2]]  # clockwise
    assert upright(img, 270).tolist() == [[2, 5], [1, 4], [0, 3]]
    assert upright(img, 0) is img


def test_decode_part_modules_have_no_top_level_media_imports():
    import ast
    from pathlib import Path

    modules = sorted(Path(frames_mod.__file__).parent.glob("*.py"))
    assert len(modules) > 1  # the package's modules, not only its __init__
    for module in modules:
        tree = ast.parse(module.read_text())
        top = {a.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for a in node.names}
        top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
        assert not top & {"av", "decord", "cv2", "torch", "ray"}, module.name  # importing vidan stays cheap


def test_error_in_on_scan_is_not_taken_for_a_decoder_failure(clip):
    def broken(t, img):
        raise ValueError("shot detector bug")

    with pytest.raises(ValueError, match="shot detector bug"):
        decode_full(clip, probe(clip), Span(0, 1.0), FrameConfig(backend="decord"), on_scan=broken)


def test_span_after_the_end_is_empty_without_complaint(clip):
    for backend in BOTH:
        out = decode_full(clip, probe(clip), Span(5.0, 6.0), cfg(backend=backend))
        assert len(out.times_s) == 0 and out.frames_decoded == 0 and out.frames_expected == 0
        assert out.notes == []


@pytest.mark.parametrize("backend", BOTH)
def test_wider_scan_span_feeds_only_the_scanner(clip, backend):
    info = probe(clip)
    span, around = Span(1.3, 2.6), Span(0.4, 3.5)
    plain_scans, wide_scans = [], []
    plain = decode_full(clip, info, span, cfg(backend=backend), on_scan=lambda t, _: plain_scans.append(t))
    wide = decode_full(clip, info, span, cfg(backend=backend), on_scan=lambda t, _: wide_scans.append(t),
                       scan_span=around)
    # the part's own results do not change...
    np.testing.assert_array_equal(wide.times_s, plain.times_s)
    np.testing.assert_array_equal(wide.images, plain.images)
    assert wide.frames_decoded == plain.frames_decoded == 32 and wide.notes == plain.notes == []
    # ...the scanner sees the frames around it too, on the same 1/8 s grid of the file
    assert [t for t in wide_scans if span.start_s <= t < span.end_s] == plain_scans
    want = [t for t in np.arange(0, 4, 0.04).round(2) if 0.4 <= t < 3.5]
    np.testing.assert_allclose(wide_scans, [max(x for x in want if x <= g) for g in np.arange(0.5, 3.5, 0.125)])


# --- the keyframe path -----------------------------------------------------------------

def _keyframe_times(path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size and p.is_keyframe)


def _nearest_keys(keys, span, fps):
    """Reference: the keyframe in the span nearest each sampling time, each once."""
    inside = [k for k in keys if span.start_s <= k < span.end_s]
    picks = []
    for k in range(int(span.duration_s * fps) + 1):
        t = span.start_s + (k + 0.5) / fps
        if t >= span.end_s:
            break
        pick = min(inside, key=lambda x: (abs(x - t), x))
        if not picks or picks[-1] != pick:
            picks.append(pick)
    return picks


@pytest.fixture(scope="module")
def keyframes_every(tmp_path_factory):
    """12 s timecode videos at 30 fps with a keyframe every ``gop`` frames."""
    d = tmp_path_factory.mktemp("keys")
    made = {}

    def make(gop: int):
        if gop not in made:
            made[gop] = timecode_video_with_keyframes(d / f"gop{gop}.mp4", [i / 30 for i in range(360)], gop=gop)
        return made[gop]

    return make


@pytest.mark.parametrize("span", [Span(0.0, 12.0), Span(3.3, 8.9)], ids=["whole", "part"])
def test_keyframe_path_samples_keyframes_at_their_own_times(keyframes_every, span):
    path = keyframes_every(45)  # every 1.5 s
    info = probe(path)
    scans, samples = [], []
    out = decode_part(path, info, span, FrameConfig(), on_scan=lambda t, img: scans.append((t, img)),
                      on_sample=lambda t, img: samples.append((t, img)))
    keys = _keyframe_times(path)
    assert max(np.diff(keys)) <= 1.5 + 1e-3
    assert out.backend == "pyav" and out.notes == [] and out.fallback is None  # decord is configured
    np.testing.assert_allclose(out.times_s, _nearest_keys(keys, span, 1.0), atol=1e-6)
    # each picture is the frame of the time reported for it
    assert [synth.read_timecode(img) for img in out.images] == [round(t * 1000) for t in out.times_s]
    assert out.images.shape[1:] == (224, 299, 3)
    assert out.frames_decoded == sum(span.start_s <= i / 30 < span.end_s for i in range(360))
    # the scan sees only reference frames, each at its own time: the frame a full decode
    # scans at each 1/8 s, or the one just before it (non-reference frames are never two in a row)
    assert [synth.read_timecode(img) for _, img in scans] == [round(t * 1000) for t, _ in scans]
    grid = [g for g in np.arange(0, 12, 0.125) if span.start_s <= g < span.end_s]
    full = [np.floor(g * 30 + 1e-6) / 30 for g in grid]
    tick = 1e-3  # the file's millisecond time base
    assert len(scans) == len(grid)
    assert all(f - 1 / 30 - tick <= t <= f + tick for (t, _), f in zip(scans, full))
    assert sum(abs(t - f) < tick for (t, _), f in zip(scans, full)) > len(full) / 2
    # on_sample: the same frames, larger (here the file's own size, under frames.detect_side)
    assert [t for t, _ in samples] == list(out.times_s)
    assert all(img.shape == (240, 320, 3) for _, img in samples)  # the file's own size: never enlarged
    assert [synth.read_timecode(img) for _, img in samples] == [round(t * 1000) for t in out.times_s]


def test_keyframes_far_apart_are_decoded_in_full(keyframes_every):
    """Keyframes every 10 s: the sampler decodes every frame, as with fast=False."""
    span = Span(0.0, 12.0)
    far = keyframes_every(300)
    assert max(np.diff(_keyframe_times(far) + [12.0])) > 2.0
    out = decode_part(far, probe(far), span, cfg(backend="pyav"))
    ref = decode_full(far, probe(far), span, cfg(backend="pyav"))
    np.testing.assert_array_equal(out.times_s, ref.times_s)
    np.testing.assert_array_equal(out.images, ref.images)
    np.testing.assert_allclose(out.times_s, displayed([i / 30 for i in range(360)], span, 1.0, 0.5), atol=1e-6)
    # the same content with keyframes every second takes the keyframe path
    near = keyframes_every(30)
    fast = decode_part(near, probe(near), span, cfg(backend="pyav"))
    np.testing.assert_allclose(fast.times_s, np.arange(12.0), atol=1e-6)


def test_keyframe_path_on_the_vfr_clip(vfr):
    span = Span(0.0, 6.6)
    out = decode_part(vfr, probe(vfr), span, cfg(backend="pyav", sample_fps=4.0))
    keys = _keyframe_times(vfr)
    if max(np.diff(keys + [6.6])) > 2.0:  # one keyframe for 6.6 s: decoded in full
        np.testing.assert_allclose(out.times_s, displayed(VFR_TIMES, span, 4.0, 0.5), atol=1e-6)
    else:
        np.testing.assert_allclose(out.times_s, _nearest_keys(keys, span, 4.0), atol=1e-6)
    assert [synth.read_timecode(img) for img in out.images] == [round(t * 1000) for t in out.times_s]


@pytest.mark.parametrize("backend", BOTH)
def test_on_sample_gets_each_model_frame_at_detection_size(clip, backend):
    info = probe(clip)
    samples = []
    out = decode_full(clip, info, Span(0.0, 4.0), cfg(backend=backend, detect_side=480),
                      on_sample=lambda t, img: samples.append((t, img)))
    assert [t for t, _ in samples] == list(out.times_s) and len(samples) == 4
    # larger than the model's frames, but never larger than the file's own (320x240)
    assert all(img.shape == (240, 320, 3) and img.dtype == np.uint8 for _, img in samples)
    for (_, big), small in zip(samples, out.images):  # the same picture, larger
        shrunk = np.asarray(Image.fromarray(big).resize(small.shape[1::-1], Image.BILINEAR), np.float32)
        assert np.abs(shrunk - small).mean() < 12


def test_keyframe_path_failing_midway_hands_over_without_repeats(keyframes_every, monkeypatch):
    path = keyframes_every(30)
    info = probe(path)
    real = _PyAVDecoder.frames

    def dies(self, keys_only=False):
        for i, frame in enumerate(real(self, keys_only)):
            if i == 20 and self.stream.codec_context.skip_frame != "DEFAULT":
                raise RuntimeError("decoder died")
            yield frame

    monkeypatch.setattr(_PyAVDecoder, "frames", dies)
    scans = []
    out = decode_part(path, info, Span(0.0, 6.0), cfg(backend="pyav"), on_scan=lambda t, _: scans.append(t))
    assert any("keyframe path failed" in n and "decoder died" in n for n in out.notes)
    np.testing.assert_allclose(out.times_s, np.arange(6.0) + 15 / 30, atol=1e-6)  # the full decode's choice
    assert all(b > a for a, b in zip(scans, scans[1:])) and len(scans) == 48


@pytest.mark.parametrize("gop", [12, 250], ids=["keyframe-path", "full-decode"])
@pytest.mark.parametrize("span", [Span(0.0, 6.0), Span(2.1, 5.3)], ids=["whole", "part"])
def test_theora_frames_the_encoder_left_empty_are_the_picture_before(tmp_path, gop, span):
    """Theora in Ogg stores a frame whose picture did not change as an empty packet. The
    decoder rejects those as invalid; they are not damage and no frame is missing: the
    picture before stays on screen. Reference: ffmpeg's own decode of every frame."""
    import av
    import subprocess

    held = synth.write_timecode_video(tmp_path / "held.mp4", [k * 0.2 for k in range(30)])  # 5 pictures a second
    path = tmp_path / f"held_g{gop}.ogv"
    synth.run_ffmpeg(["-i", held, "-vf", "fps=25", "-c:v", "libtheora", "-q:v", "7", "-g", str(gop), path])
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [(float(p.pts * s.time_base), p.size) for p in c.demux(s) if p.pts is not None]
    times = [t for t, _ in packets]
    assert times == [i / 25 for i in range(len(times))]
    assert sum(not size for _, size in packets) > 10, "the encoder stored no empty frames: nothing is tested"
    raw = subprocess.run([synth.ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True, check=True).stdout
    reference = np.frombuffer(raw, np.uint8).reshape(-1, 240, 320, 3)  # frame i is shown from i / 25 s
    assert len(reference) >= len(times)

    out = decode_part(path, probe(path), span, cfg(backend="pyav"))
    assert out.notes == []  # neither "corrupt packets" nor "frames missing"
    assert out.frames_decoded == sum(span.start_s <= t < span.end_s for t in times)
    if gop == 250:  # every frame decoded: the frame shown at each sampling time
        np.testing.assert_allclose(out.times_s, displayed(times, span, 1.0, 0.5), atol=1e-6)
    else:
        np.testing.assert_allclose(out.times_s, _nearest_keys(_keyframe_times(path), span, 1.0), atol=1e-6)
    # each picture is the one ffmpeg shows at the time reported for it
    shown = [synth.read_timecode(reference[round(t * 25)]) for t in out.times_s]
    assert [synth.read_timecode(img) for img in out.images] == shown


@pytest.fixture(scope="module")
def squeezed(tmp_path_factory):
    """A 16:9 picture stored 720x576 with 64:45 pixels (DVD, broadcast): a 200x200 white
    square in the picture as shown. Two ways to say it: in the H.264 stream, and only in
    the container (Matroska's display size over a stream that says nothing)."""
    d = tmp_path_factory.mktemp("sar")
    box = "color=gray:size=1024x576:rate=25,drawbox=x=412:y=188:w=200:h=200:color=white:t=fill"
    in_stream = synth.lavfi(d / "in_stream.mp4", box, 2.0, "-vf", "scale=720:576,setsar=64/45",
                            "-c:v", "libx264", "-g", "25")
    plain = synth.lavfi(d / "plain.mp4", box, 2.0, "-vf", "scale=720:576,setsar=1", "-c:v", "libx264", "-g", "25")
    in_container = d / "in_container.mkv"
    synth.run_ffmpeg(["-i", plain, "-c", "copy", "-aspect", "16:9", in_container])
    return {"stream": in_stream, "container": in_container, "square pixels": plain}


def _white_box(img: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(img.mean(axis=-1) > 200)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize("where", ["stream", "container"])
@pytest.mark.parametrize("backend", BOTH)
def test_squeezed_pixels_come_out_square(squeezed, where, backend):
    from vidan.thumbnails import read_frame

    path = squeezed[where]
    info = probe(path)
    assert (info.width, info.height, info.sample_aspect) == (720, 576, "64/45")
    for out in (decode_part(path, info, Span(0.0, 2.0), cfg(backend=backend)),  # keyframe path
                decode_full(path, info, Span(0.0, 2.0), cfg(backend=backend))):
        h, w = out.images.shape[1:3]
        assert w / h == pytest.approx(16 / 9, rel=0.01)
        bw, bh = _white_box(out.images[0])
        assert bw / bh == pytest.approx(1.0, rel=0.05)  # the square is square, not 0.7 of it
    thumb = read_frame(str(path), 1.0, info.start_time_s, 0, width=320)
    assert thumb.shape[:2] == (180, 320)
    bw, bh = _white_box(thumb)
    assert bw / bh == pytest.approx(1.0, rel=0.05)


def test_square_pixels_have_no_sample_aspect(squeezed):
    info = probe(squeezed["square pixels"])
    assert info.sample_aspect is None
    out = decode_part(squeezed["square pixels"], info, Span(0.0, 1.0), cfg(backend="pyav"))
    assert out.images.shape[1:3] == (224, 280)  # 720x576 as it is


@pytest.mark.parametrize("path", ["keyframes", "decord", "pyav"])
def test_a_video_track_that_starts_after_the_sound_has_lost_nothing(tmp_path, path):
    """Its own header says the pictures start 1.5 s in (a camera that records sound
    first, a title added later): no "first video frame" complaint, no frames invented
    before it, and a part wholly before it is quiet too."""
    made = synth.lavfi(tmp_path / "v.mp4", "testsrc=size=160x120:rate=25", 6.0, "-c:v", "libx264", "-g", "25")
    sound = synth.lavfi(tmp_path / "a.m4a", "sine=frequency=300", 7.5, "-c:a", "aac")
    late = tmp_path / "late.mp4"
    synth.run_ffmpeg(["-itsoffset", "1.5", "-i", made, "-i", sound, "-map", "0:v", "-map", "1:a", "-c", "copy", late])
    info = probe(late)
    assert info.video_start_s == pytest.approx(1.5, abs=0.01) and info.duration_s == pytest.approx(7.5, abs=0.05)
    cfg = FrameConfig(backend="pyav" if path == "keyframes" else path)
    decode = _decode_part if path == "keyframes" else decode_full
    out = decode(late, info, Span(0.0, info.duration_s), cfg)
    assert out.notes == [] and out.times_s.min() == pytest.approx(1.5, abs=0.01)
    assert decode(late, info, Span(0.0, 1.4), cfg).notes == []


def test_decord_stuck_in_its_seek_hands_the_part_to_pyav(tmp_path, monkeypatch):
    """decord loops for ever in its seek on an interlaced H.264 TS (dmlc/decord#269; seen
    past the 900-s deadline on 20 s of video). The decode stage gives its child a deadline
    of its own and has PyAV decode the part: every frame there, nothing reported lost."""
    from vidan.config import Config
    from vidan.stages import decode as decode_stage
    from vidan.stages.jobs import PartJob

    path = tmp_path / "interlaced.ts"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=20", "-c:v", "libx264",
                      "-flags", "+ildct+ilme", "-x264-params", "interlaced=1:tff=1", "-f", "mpegts", path])
    info = probe(path)
    monkeypatch.setattr(decode_stage, "DECORD_GUARD_MIN_S", 8.0)
    monkeypatch.setattr(decode_stage, "DECORD_GUARD_X", 0.1)
    cfg = Config().replace(frames={"backend": "decord"}, detect={"faces": False, "people": False},
                           limits={"file_timeout_s": 30.0})
    stage = decode_stage.DecodeStage(cfg)
    try:
        t0 = time.monotonic()
        (part,) = stage.process([PartJob("v", str(path), info, Span(0.0, info.duration_s), 0, 1)])
        took = time.monotonic() - t0
    finally:
        stage.close()
    assert part.backend == "pyav" and part.fallback.startswith("decord failed (timed out after 8 s"), part.fallback
    assert part.notes == []
    assert len(part.times_s) == 20 and part.times_s[-1] == pytest.approx(19.5, abs=0.05)
    assert took < 120
