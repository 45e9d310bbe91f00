"""What each stage costs on one minute of video, against the limit that bounds it.

Generates a 60 s 640x360 video (photos with pans, a hard cut every 10 s, speech under
it), then times each stage in this process: the decode limit (``ffmpeg -an -f null``,
a full decode with nothing else), vidan's frame stage with each backend (decode + shot
scan + model-size frames), the image model on the sampled frames, audio extraction,
voice activity, Whisper and the finishing stage. Prints seconds, x real time, and the
frame stage's cost as a multiple of the decode limit.

    .venv/bin/python benchmarks/bench_stages.py
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from vidan import synth
from vidan.config import Config
from vidan.media.ffmpeg_bin import ffmpeg_exe
from vidan.synth import Scene

DURATION = 60.0


def build(folder: Path) -> Path:
    names = ["coffee", "chelsea", "rocket", "astronaut"]
    scenes = [Scene(10.0, synth.photo(names[i % 4])) for i in range(6)]
    clips = synth.speech_names()
    audio = synth.concat_audio(folder / "a.wav", [(i * 10.0 + 0.5, synth.speech_clip(clips[i % len(clips)]))
                                                  for i in range(6)])
    return synth.write_video(folder / "minute.mp4", scenes, size=(640, 360), fps=30, audio=audio)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    from vidan.assemble import VideoParts
    from vidan.media.audio import extract_audio
    from vidan.media.probe import probe
    from vidan.models.audio_features import speech_spans
    from vidan.records import Span
    from vidan.stages import AudioStage, FinishStage, PartJob, VisualStage, scan_part

    cfg = Config()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidan-stages-") as tmp:
        path = build(Path(tmp))
        info = probe(path)
        span = Span(0.0, info.duration_s)
        _, limit = timed(lambda: subprocess.run([ffmpeg_exe(), "-v", "error", "-threads", "1", "-i", str(path), "-an",
                                                 "-f", "null", "-"], check=True))
        rows.append(("decode limit: ffmpeg full decode, 1 thread", limit, "1.00"))
        for backend in ("decord", "pyav"):
            c = cfg.replace(frames={"backend": backend})
            (decoded, cuts), s = timed(lambda: scan_part(str(path), info, span, c))
            rows.append((f"frames: {backend} decode + shot scan + sampling ({len(decoded.times_s)} frames, "
                         f"{len(cuts)} cuts)", s, f"{s / limit:.2f}"))
        visual = VisualStage(cfg, "cpu")
        job = PartJob("v", str(path), info, span, 0, 1)
        part, s = timed(lambda: visual(job))
        rows.append(("visual stage: isolated decode + EfficientNet-Lite0", s, f"{s / limit:.2f}"))
        _, s = timed(lambda: visual.classifier.probs(np.zeros((60, 224, 398, 3), np.uint8)))
        rows.append(("image model alone, 60 frames", s, ""))
        (samples, _), s = timed(lambda: extract_audio(str(path), info, span))
        rows.append(("audio extraction (ffmpeg to 16 kHz mono)", s, ""))
        _, s = timed(lambda: speech_spans(samples))
        rows.append(("voice activity (Silero)", s, ""))
        audio = AudioStage(cfg, "cpu")
        apart, s = timed(lambda: audio(job))
        rows.append((f"audio stage: extraction + VAD + Whisper base ({len(apart.words)} words)", s, ""))
        finish = FinishStage(cfg, "cpu")
        parts = VideoParts(info, frames=[part], audio=[apart], transcribed=True)
        (seg_rows, _), s = timed(lambda: finish("v", str(path), parts, {"config_hash": "x", "run_id": "r"}))
        rows.append((f"finish stage: plan, embed, fuse, tag ({len(seg_rows)} segments)", s, ""))
    print(f"\nStage costs on {DURATION:.0f} s of 640x360 30 fps video with speech (one process, CPU)\n")
    print("| stage | seconds | x real time | vs decode limit |")
    print("|---|---|---|---|")
    for name, s, ratio in rows:
        print(f"| {name} | {s:.2f} | {DURATION / s:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
