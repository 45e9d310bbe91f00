"""Cost of the frame stage (sampling + shot scan) against one full decode of the file.

    .venv/bin/python benchmarks/bench_frames.py [--keep DIR] [--repeat N] [--json PATH]

Makes 60 s, 640x360, 25 fps H.264 videos with known cuts and fades: scikit-image photos
(slow pans) and ffmpeg's moving test sources (testsrc2, mandelbrot, life, ...) cut
together, each encoded with a keyframe every 1 s, every 2 s and at x264's default
(every 250 frames, plus its scene-cut keyframes). For each file it measures, one decoder
thread throughout:

* the decode limit: ``ffmpeg -threads 1 -i F -an -f null -`` through the same ffmpeg
  (imageio_ffmpeg), the least a stage that decodes every frame can cost;
* before: the frame stage as it was (every frame decoded by the configured backend,
  decord, and PySceneDetect's ContentDetector fed every scan frame);
* after: ``decode_part`` as it is now, with ``ShotDetector`` (the keyframe path when
  keyframes are at most ``MAX_KEY_GAP_S`` apart, else the full decode).

Both run as ``stages.scan_part`` does (1 frame a second for the model, 8 a second at
96 px for the scan), side by side in one process. Times are CPU seconds (user + system,
the child's for ffmpeg), the fastest of ``--repeat`` runs: the machine may be shared,
and CPU time moves less than wall time with the load. Cuts: how many each way, and
whether every boundary is the same one (same kind, at most one frame apart).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from _common import block, header, machine, parser, publish

from vidan import synth
from vidan.config import Config, ShotConfig
from vidan.media.ffmpeg_bin import ffmpeg_exe
from vidan.media.frames import backend as frame_backend
from vidan.media.frames import decode_part
from vidan.media.frames.keyframes import _KEY_GAP_SLACK_S, MAX_KEY_GAP_S
from vidan.media.probe import probe
from vidan.records import Span
from vidan.shots import ShotDetector
from vidan.synth import Scene

NAME = "bench_frames"
COLUMNS = ("file", "keyframes", "decode limit s", "before s", "before x", "after s", "after x", "after path",
           "model frames before / after", "cuts before / after", "same cuts")
HEADER = header(COLUMNS)
SIZE = (640, 360)
DURATION_S = 60.0
GOPS = {"every 1 s": 25, "every 2 s": 50, "x264 default": None}


def photo_scenes() -> list[Scene]:
    """Photos with slow pans, hard cuts between them, a fade through black now and then."""
    rng = np.random.default_rng(3)
    photos = [synth.photo(n) for n in ("coffee", "chelsea", "rocket", "astronaut")]
    scenes, t, i = [], 0.0, 0
    while t < DURATION_S - 1e-9:
        d = min(float(rng.choice([1.3, 2.2, 3.1, 4.7, 5.9])), DURATION_S - t)
        img = photos[i % 4] if i % 5 != 4 else (200, 60, 40)
        scenes.append(Scene(d, img, fade_in_s=0.5 if i % 7 == 3 else 0.0))
        t, i = t + d, i + 1
    return scenes


SOURCES = ("testsrc2", "mandelbrot", "life=mold=10:ratio=0.1:death_color=#C83232:life_color=#00ff00",
           "smptehdbars", "cellauto=rule=110", "rgbtestsrc")


def make(folder: Path) -> list[tuple[str, str, Path]]:
    out = []
    scenes = photo_scenes()
    for label, gop in GOPS.items():
        path = folder / f"photos_{gop or 'default'}.mp4"
        if not path.exists():
            synth.write_video(path, scenes, size=SIZE, gop=gop)
        out.append(("photos", label, path))
    for label, gop in GOPS.items():
        path = folder / f"sources_{gop or 'default'}.mp4"
        if not path.exists():
            part_s = DURATION_S / len(SOURCES)
            args: list[str] = []
            for src in SOURCES:
                args += ["-f", "lavfi", "-i", src + (":" if "=" in src else "=") + f"size={SIZE[0]}x{SIZE[1]}:rate=25"]
            chain = "".join(f"[{i}:v]trim=duration={part_s},setpts=PTS-STARTPTS,format=yuv420p[v{i}];"
                            for i in range(len(SOURCES)))
            chain += "".join(f"[v{i}]" for i in range(len(SOURCES))) + f"concat=n={len(SOURCES)}:v=1:a=0[out]"
            codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p"] + (["-g", str(gop)] if gop else [])
            synth.run_ffmpeg([*args, "-filter_complex", chain, "-map", "[out]", *codec, "-t", str(DURATION_S), path])
        out.append(("sources", label, path))
    return out


def cpu_child(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def decode_limit(path: Path) -> float:
    return cpu_child([ffmpeg_exe(), "-hide_banner", "-nostdin", "-threads", "1", "-i", str(path), "-an",
                      "-f", "null", "-"])


class SceneDetectShots(ShotDetector):
    """The detector as it was: PySceneDetect's ContentDetector fed every scan frame."""

    def __init__(self, cfg: ShotConfig):
        super().__init__(cfg)
        from scenedetect.detectors import ContentDetector
        from scenedetect.stats_manager import StatsManager

        self._content = ContentDetector(threshold=cfg.threshold, min_scene_len=0)
        self._stats = StatsManager()
        self._content.stats_manager = self._stats

    def push(self, t_s: float, frame_rgb: np.ndarray) -> None:
        from scenedetect import FrameTimecode

        from vidan.shots import _Frame

        index = len(self._frames)
        tc = FrameTimecode(index, fps=8.0)
        self._content.process_frame(tc, np.ascontiguousarray(frame_rgb[..., ::-1]))
        content = self._stats.get_metrics(tc, ["content_val"])[0] if index else 0.0
        self._frames.append(_Frame(float(t_s), float(content or 0.0), float(frame_rgb.mean())))


def stage(path: Path, before: bool):
    """What ``stages.scan_part`` does for the whole file: (CPU s, decoded, cuts)."""
    config = Config()
    info = probe(path)
    span = Span(0.0, info.duration_s)
    t0 = time.process_time()
    det = (SceneDetectShots if before else ShotDetector)(config.shots)
    decoded = decode_part(path, info, span, config.frames, on_scan=det.push, scan_span=span, fast=not before)
    cuts = det.finish()
    return time.process_time() - t0, decoded, cuts


def same_cuts(a, b, frame_s: float) -> bool:
    return len(a) == len(b) and all(x.kind == y.kind and abs(x.t_s - y.t_s) <= frame_s + 1e-6 for x, y in zip(a, b))


def key_gap(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys = sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size and p.is_keyframe)
    return float(max(np.diff(keys + [DURATION_S])))


def run(folder: Path, repeat: int) -> dict[str, Any]:
    frame_backend.DECODE_THREADS = 1
    rows = []
    for content, label, path in make(folder):
        limit = min(decode_limit(path) for _ in range(repeat))
        runs = {}
        for before in (True, False):
            best = None
            for _ in range(repeat):
                r = stage(path, before)
                best = r if best is None or r[0] < best[0] else best
            runs[before] = best
        (b_s, b_dec, b_cuts), (a_s, a_dec, a_cuts) = runs[True], runs[False]
        gap = key_gap(path)
        # decode_part takes the keyframe path on exactly this condition (read from the packet index)
        path_taken = "keyframes" if gap <= MAX_KEY_GAP_S + _KEY_GAP_SLACK_S else "full decode"
        rows.append({"file": content, "keyframes": label, "max_key_gap_s": gap, "limit_s": limit,
                     "before_s": b_s, "after_s": a_s, "after_path": path_taken,
                     "frames_before": len(b_dec.times_s), "frames_after": len(a_dec.times_s),
                     "cuts_before": [(round(c.t_s, 3), c.kind) for c in b_cuts],
                     "cuts_after": [(round(c.t_s, 3), c.kind) for c in a_cuts],
                     "same_cuts": same_cuts(b_cuts, a_cuts, 1 / 25)})
    return {"params": {"size": list(SIZE), "duration_s": DURATION_S, "fps": 25, "threads": 1, "repeat": repeat,
                       "max_key_gap_s": MAX_KEY_GAP_S}, "rows": rows}


def render(record: dict[str, Any]) -> str:
    p = record["params"]
    title = (f"**Frame stage cost** (`benchmarks/{NAME}.py`): {p['duration_s']:.0f} s, {p['size'][0]}x{p['size'][1]}, "
             f"{p['fps']} fps H.264 files; sampling at 1 fps for the model plus the shot scan at 8 fps, as "
             f"`stages.scan_part` runs them, {p['threads']} decoder thread; CPU seconds, best of {p['repeat']}. "
             "x: times the decode limit (`ffmpeg -threads 1 -i F -an -f null -`). Before: every frame decoded "
             "(decord) and PySceneDetect fed every scan frame; after: the keyframe path when keyframes are at most "
             f"{p['max_key_gap_s']:g} s apart, else every frame decoded. Same cuts: same kinds, at most one frame apart.")
    cells = []
    for r in record["rows"]:
        cells.append((r["file"], f"{r['keyframes']} (max gap {r['max_key_gap_s']:.2f} s)", f"{r['limit_s']:.2f}",
                      f"{r['before_s']:.2f}", f"{r['before_s'] / r['limit_s']:.2f}", f"{r['after_s']:.2f}",
                      f"{r['after_s'] / r['limit_s']:.2f}", r["after_path"],
                      f"{r['frames_before']} / {r['frames_after']}",
                      f"{len(r['cuts_before'])} / {len(r['cuts_after'])}", "yes" if r["same_cuts"] else "no"))
    return block(title, record["machine"], COLUMNS, cells)


def main(argv: Optional[list[str]] = None) -> int:
    ap = parser(NAME, __doc__)
    ap.add_argument("--keep", type=Path, help="write the videos here and keep them (reused when present)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest counts")
    args = ap.parse_args(argv)
    m = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        record = run(folder, args.repeat)
    publish({"benchmark": NAME, "machine": m, **record}, render, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
