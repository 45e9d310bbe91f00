"""Shot detection on real encoded video, sampled the way the pipeline scans it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidan import synth
from vidan.config import ShotConfig
from vidan.records import Cut
from vidan.shots import ShotDetector
from vidan.synth import Scene

SCAN_FPS = 8.0
SCAN_WIDTH = 96


def scan(path: Path, fps: float = SCAN_FPS) -> list[tuple[float, np.ndarray]]:
    """The frames the pipeline's shot scan sees: ``decode_part``'s ``on_scan`` at ``fps``."""
    from vidan.config import FrameConfig
    from vidan.media.frames import decode_part
    from vidan.media.probe import probe
    from vidan.records import Span

    out: list[tuple[float, np.ndarray]] = []
    info = probe(path)
    decode_part(path, info, Span(0.0, info.duration_s), FrameConfig(backend="pyav", scan_fps=fps, scan_width=SCAN_WIDTH),
                on_scan=lambda t, img: out.append((t, img)))
    return out


def detect(frames: list[tuple[float, np.ndarray]], cfg: ShotConfig = ShotConfig()) -> list[Cut]:
    det = ShotDetector(cfg)
    for t, img in frames:
        det.push(t, img)
    return det.finish()


def scene_starts(scenes: list[Scene]) -> list[float]:
    return list(np.cumsum([s.duration_s for s in scenes])[:-1])


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {n: synth.photo(n) for n in ("coffee", "chelsea", "rocket", "astronaut")}


def test_hard_cuts_found_at_the_first_frame_of_each_shot(tmp_path, photos):
    scenes = [Scene(2.0, photos["coffee"]), Scene(1.7, photos["chelsea"]), Scene(2.3, photos["rocket"]),
              Scene(1.0, photos["astronaut"]),  # one second: a fast pan
              Scene(1.5, (200, 40, 40)), Scene(1.5, (40, 40, 200)), Scene(2.0, photos["coffee"])]
    frames = scan(synth.write_video(tmp_path / "cuts.mp4", scenes))
    cuts = detect(frames)
    truth = scene_starts(scenes)
    assert [c.kind for c in cuts] == ["cut"] * len(truth), cuts
    times = [t for t, _ in frames]
    for c, t in zip(cuts, truth):
        assert abs(c.t_s - t) <= 0.25
        # The cut is the first scanned frame of the new shot, at its own presentation time.
        assert c.t_s == min(x for x in times if x >= t - 1e-6)
        assert c.score >= ShotConfig().threshold
    assert cuts == sorted(cuts, key=lambda c: c.t_s)


def test_no_cut_inside_a_panning_shot(tmp_path, photos):
    # One long slow pan and two short (fast) ones, each a single shot of the same photo.
    for i, d in enumerate((8.0, 2.0, 1.2)):
        frames = scan(synth.write_video(tmp_path / f"pan{i}.mp4", [Scene(d, photos["astronaut"], pan=True)]))
        assert detect(frames) == [], f"false cut in a {d} s pan"


def test_fade_out_fade_in_is_one_fade_boundary(tmp_path, photos):
    scenes = [Scene(3.0, photos["coffee"], fade_out_s=1.0), Scene(3.0, photos["rocket"], fade_in_s=1.0),
              Scene(2.0, photos["chelsea"], fade_out_s=0.3), Scene(2.5, photos["astronaut"], fade_in_s=0.3)]
    cuts = detect(scan(synth.write_video(tmp_path / "fade.mp4", scenes)))
    # Long and short fades are one "fade" boundary each; the hard cut between them stays a cut.
    assert [c.kind for c in cuts] == ["fade", "cut", "fade"], cuts
    for c, t in zip(cuts, scene_starts(scenes)):
        assert abs(c.t_s - t) <= 0.5


def test_fade_from_black_at_start_and_to_black_at_end(tmp_path, photos):
    scenes = [Scene(1.5, (0, 0, 0), pan=False), Scene(3.0, photos["coffee"], fade_in_s=0.5, fade_out_s=0.5),
              Scene(1.5, (0, 0, 0), pan=False)]
    cuts = detect(scan(synth.write_video(tmp_path / "black.mp4", scenes)))
    assert [c.kind for c in cuts] == ["fade", "fade"], cuts
    # The picture starts where it fades in, and the black tail is its own shot.
    assert 1.5 <= cuts[0].t_s <= 1.5 + 0.5
    assert 4.0 <= cuts[1].t_s <= 4.5 + 0.25


def test_variable_frame_rate_times_are_respected(tmp_path, photos):
    # Irregular spacing: bursts at 30 fps, then stretches at 4 fps; scene changes at 2.0 and 3.7 s.
    rng = np.random.default_rng(1)
    times, t = [], 0.0
    while t < 6.0:
        times.append(round(t, 3))
        t += float(rng.choice([1 / 30, 0.25, 0.09]))
    scenes = [Scene(2.0, photos["coffee"]), Scene(1.7, photos["chelsea"]), Scene(2.3, photos["rocket"])]
    path = synth.write_video(tmp_path / "vfr.mp4", scenes, frame_times=times)
    frames = scan(path)
    scanned = [t for t, _ in frames]
    assert any(b - a > 0.2 for a, b in zip(scanned, scanned[1:])), "the test needs irregular gaps"
    cuts = detect(frames)
    assert len(cuts) == 2
    for c, truth in zip(cuts, (2.0, 3.7)):
        assert c.t_s == min(x for x in scanned if x >= truth - 1e-6)


def test_min_shot_length_is_respected(tmp_path, photos):
    scenes = [Scene(1.0, photos["coffee"]), Scene(0.4, photos["chelsea"]), Scene(1.0, photos["rocket"]),
              Scene(1.0, photos["astronaut"])]
    frames = scan(synth.write_video(tmp_path / "short.mp4", scenes))
    cfg = ShotConfig(min_shot_s=0.6)
    cuts = detect(frames, cfg)
    assert len(cuts) == 2  # 1.0 and 1.4 are too close: one of them goes; 2.4 stays
    assert all(b.t_s - a.t_s >= cfg.min_shot_s for a, b in zip(cuts, cuts[1:]))
    assert abs(cuts[-1].t_s - 2.4) <= 0.25
    # Lowering the minimum keeps both.
    assert len(detect(frames, ShotConfig(min_shot_s=0.2))) == 3


def test_push_rejects_bad_input():
    det = ShotDetector(ShotConfig())
    det.push(0.0, np.zeros((72, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="increasing"):
        det.push(0.0, np.zeros((72, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        det.push(1.0, np.zeros((72, 96), np.uint8))
    assert det.finish() == []


def test_flat_content_has_no_cuts():
    det = ShotDetector(ShotConfig())
    rng = np.random.default_rng(0)
    for i in range(40):
        det.push(i / 8, np.clip(120 + rng.integers(-6, 7, (72, 96, 3)), 0, 255).astype(np.uint8))
    assert det.finish() == []


def test_dip_to_black_between_hard_cuts_is_one_boundary(tmp_path, photos):
    # Cut to 1.6 s of black, cut back in: the jumps into and out of black are part of one
    # transition, reported once in the middle of the black.
    scenes = [Scene(2.0, photos["coffee"]), Scene(1.6, (0, 0, 0), pan=False), Scene(2.0, photos["rocket"])]
    cuts = detect(scan(synth.write_video(tmp_path / "dip.mp4", scenes)))
    assert [c.kind for c in cuts] == ["fade"], cuts
    assert abs(cuts[0].t_s - 2.8) <= 0.25


@pytest.fixture(scope="module")
def boundary_clip(tmp_path_factory, photos):
    """Cuts at 3.0, 4.04, 6.0 and 8.92 s, and a dip to black over 10.4-12.0 s; and the
    cuts one scan of the whole file finds. The part lengths below put boundaries on cuts
    (3.0, 4.04, 6.0), a frame or two beside them (6.06, 9.0) and inside the black (11.0, 12.0)."""
    from vidan.config import Config
    from vidan.media.probe import probe
    from vidan.records import Span
    from vidan.stages import scan_part

    scenes = [Scene(3.0, photos["coffee"]), Scene(1.04, photos["chelsea"]), Scene(1.96, photos["rocket"]),
              Scene(2.92, photos["astronaut"]), Scene(1.48, photos["coffee"]), Scene(1.6, (0, 0, 0), pan=False),
              Scene(2.0, photos["chelsea"])]
    path = synth.write_video(tmp_path_factory.mktemp("bounds") / "bounds.mp4", scenes)
    info = probe(path)
    _, whole = scan_part(str(path), info, Span(0.0, info.duration_s), Config())
    return path, info, scene_starts(scenes), whole


def test_whole_file_scan_finds_the_boundary_clips_cuts(boundary_clip):
    _, _, truth, whole = boundary_clip
    assert [c.kind for c in whole] == ["cut", "cut", "cut", "cut", "fade"], whole
    for c, t in zip(whole, truth[:4]):
        assert t - 1e-6 <= c.t_s <= t + 0.125
    assert abs(whole[-1].t_s - (truth[4] + 0.8)) <= 0.25  # the middle of the black


@pytest.mark.parametrize("part_s", [3.0, 2.02, 5.5])
def test_cuts_near_part_boundaries_are_found_once(boundary_clip, part_s):
    """Part by part (as long files are analysed), the cuts are exactly those of one scan
    of the whole file: none lost at a boundary, none invented, none found twice."""
    from vidan.config import Config
    from vidan.records import Span
    from vidan.stages import scan_part

    path, info, _, whole = boundary_clip
    parts = []
    for start in np.arange(0.0, info.duration_s, part_s):
        span = Span(float(start), float(min(start + part_s, info.duration_s)))
        _, cuts = scan_part(str(path), info, span, Config())
        assert all(span.start_s <= c.t_s < span.end_s for c in cuts)
        parts += cuts
    assert parts == whole


def test_content_score_is_scenedetects():
    """``content_score`` stands in for ContentDetector.process_frame: same numbers."""
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector
    from scenedetect.stats_manager import StatsManager

    from vidan.shots import _hsv, content_score

    rng = np.random.default_rng(2)
    det, stats = ContentDetector(threshold=27.0, min_scene_len=0), StatsManager()
    det.stats_manager = stats
    frames = [rng.integers(0, 256, (54, 96, 3), dtype=np.uint8) for _ in range(3)]
    frames.append(np.clip(frames[-1].astype(int) + 9, 0, 255).astype(np.uint8))
    for i, f in enumerate(frames):
        tc = FrameTimecode(i, fps=8.0)
        det.process_frame(tc, np.ascontiguousarray(f[..., ::-1]))
        if i:
            assert content_score(_hsv(frames[i - 1]), _hsv(f)) == stats.get_metrics(tc, ["content_val"])[0]


def scan_both(path: Path):
    """Cuts from the keyframe path's scan and from a scan of every frame."""
    from vidan.config import FrameConfig
    from vidan.media.frames import decode_part
    from vidan.media.probe import probe
    from vidan.records import Span

    info = probe(path)
    out = {}
    for fast in (True, False):
        det = ShotDetector(ShotConfig())
        decode_part(path, info, Span(0.0, info.duration_s), FrameConfig(), on_scan=det.push, fast=fast)
        out[fast] = det.finish()
    return out[True], out[False]


@pytest.fixture(scope="module")
def keyframed_clip(tmp_path_factory, photos):
    """Cuts and fades, keyframes every second: the scan takes the keyframe path."""
    scenes = [Scene(2.0, photos["coffee"]), Scene(1.7, photos["chelsea"]), Scene(2.3, photos["rocket"], fade_out_s=0.6),
              Scene(1.5, photos["astronaut"], fade_in_s=0.5), Scene(1.3, (200, 40, 40)), Scene(1.6, (0, 0, 0), pan=False),
              Scene(2.1, photos["coffee"]), Scene(0.9, photos["chelsea"]), Scene(1.6, photos["coffee"])]
    path = synth.write_video(tmp_path_factory.mktemp("keyed") / "keyed.mp4", scenes, gop=25)
    return path, scenes


def test_keyframe_path_scan_finds_the_full_decode_cuts(keyframed_clip):
    path, scenes = keyframed_clip
    fast, full = scan_both(path)
    assert [c.kind for c in full] == ["cut", "cut", "fade", "cut", "fade", "cut", "cut"], full
    assert [c.kind for c in fast] == [c.kind for c in full], (fast, full)
    # the same boundary: on the same frame, or the (reference) frame just before it
    assert all(-0.04 - 1e-6 <= a.t_s - b.t_s <= 1e-6 for a, b in zip(fast, full)), (fast, full)
    for c, t in zip(fast, scene_starts(scenes)[:3] + [7.5, 9.6, 12.5, 13.4]):  # 9.6: the middle of the black
        if c.kind == "cut":
            assert t - 1e-6 <= c.t_s <= t + 0.125, (c, t)
        else:
            assert abs(c.t_s - t) <= 0.25, (c, t)


@pytest.mark.parametrize("part_s", [2.02, 5.5])
def test_keyframe_path_parts_find_the_whole_files_cuts(keyframed_clip, part_s):
    from vidan.config import Config
    from vidan.media.probe import probe
    from vidan.records import Span
    from vidan.stages import scan_part

    path, _ = keyframed_clip
    info = probe(path)
    decoded, whole = scan_part(str(path), info, Span(0.0, info.duration_s), Config())
    assert decoded.backend == "pyav" and len(decoded.times_s) == 15  # one keyframe a second
    parts = []
    for start in np.arange(0.0, info.duration_s, part_s):
        span = Span(float(start), float(min(start + part_s, info.duration_s)))
        parts += scan_part(str(path), info, span, Config())[1]
    assert parts == whole
