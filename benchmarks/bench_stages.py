"""What each stage costs on one minute of video, against the limit that bounds it.

Generates a 640x360 30 fps video (photos, a hard cut every 10 s, speech under it), then
times each stage of the registry once in this process, one thread each as a Ray actor on
a CPU has: the decode limit (``ffmpeg -an -f null``, a full decode with nothing else: the
baseline), the frame pass with each backend (decode + shot scan + model-size frames),
then each stage on the previous one's output: decode (isolated child, detectors),
vision, audio (with extraction and voice activity alone beside it), speech and finish. Prints one markdown table:
seconds, x real time, and each stage's cost as a multiple of the decode limit.

    .venv/bin/python benchmarks/bench_stages.py [--seconds 60] [--quick] [--json PATH]
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import block, header, machine, parser, publish

NAME = "bench_stages"
COLUMNS = ("stage", "output", "seconds", "x real time", "vs decode limit")
HEADER = header(COLUMNS)
SCENE_S = 10.0


def build(folder: Path, n_scenes: int) -> Path:
    from vidan import synth
    from vidan.synth import Scene

    names = ["coffee", "chelsea", "rocket", "astronaut"]
    scenes = [Scene(SCENE_S, synth.photo(names[i % 4])) for i in range(n_scenes)]
    clips = synth.speech_names()
    audio = synth.concat_audio(folder / "a.wav", [(i * SCENE_S + 0.5, synth.speech_clip(clips[i % len(clips)]))
                                                  for i in range(n_scenes)])
    return synth.write_video(folder / "minute.mp4", scenes, size=(640, 360), fps=30, audio=audio)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(n_scenes: int) -> list[dict[str, Any]]:
    from vidan.assemble import VideoParts
    from vidan.config import Config
    from vidan.media.audio import extract_audio
    from vidan.media.ffmpeg_bin import ffmpeg_exe
    from vidan.media.probe import probe
    from vidan.models.audio_features import speech_spans
    from vidan.records import Span
    from vidan.stages import FinishJob, PartJob, load_stages, scan_part

    cfg = Config()
    rows = []

    def row(stage: str, output: str, seconds: float) -> None:
        rows.append({"stage": stage, "output": output, "seconds": seconds})

    def one(name: str, item):
        (value,) = stages[name].process([item])
        if isinstance(value, BaseException):
            raise value
        return value

    with tempfile.TemporaryDirectory(prefix="vidan-stages-") as tmp:
        path = build(Path(tmp), n_scenes)
        info = probe(path)
        span = Span(0.0, info.duration_s)
        _, s = timed(lambda: subprocess.run([ffmpeg_exe(), "-v", "error", "-threads", "1", "-i", str(path), "-an",
                                             "-f", "null", "-"], check=True))
        row("decode limit: ffmpeg full decode, 1 thread", "", s)
        for backend in ("decord", "pyav"):
            c = cfg.replace(frames={"backend": backend})
            (decoded, cuts), s = timed(lambda: scan_part(str(path), info, span, c))
            row(f"frames: {backend} decode + shot scan + sampling", f"{len(decoded.times_s)} frames, {len(cuts)} cuts",
                s)
        stages = load_stages(cfg, device="cpu", threads=1)  # one thread a stage, as a Ray actor on a CPU has
        job = PartJob("v", str(path), info, span, 0, 1)
        one("decode", job)  # the worker's isolated child starts once, then serves every part
        dpart, s = timed(lambda: one("decode", job))
        row("decode stage: isolated child, frames + shots + faces + people", f"{len(dpart.times_s)} frames", s)
        fpart, s = timed(lambda: one("vision", dpart))
        row(f"vision stage: EfficientNet-Lite0 ({stages['vision'].classifier.runtime})", f"{len(fpart.times_s)} frames",
            s)
        (samples, _), s = timed(lambda: extract_audio(str(path), info, span))
        row("audio extraction (ffmpeg to 16 kHz mono)", f"{len(samples) / 16000:.1f} s of audio", s)
        spans, s = timed(lambda: speech_spans(samples))
        row("voice activity (Silero)", f"{len(spans)} speech spans", s)
        heard, s = timed(lambda: one("audio", job))
        row("audio stage: extraction + VAD + loudness + sound events", f"{len(heard.heard_speech)} speech spans", s)
        apart, s = timed(lambda: one("asr", heard))
        row("asr stage: speech recognition, Whisper base, int8", f"{len(apart.words)} words", s)
        parts = VideoParts(info, frames=[fpart], audio=[apart], transcribed=True)
        (seg_rows, _), s = timed(lambda: one("finish", FinishJob("v", str(path), parts,
                                                                 {"config_hash": "x", "run_id": "r"})))
        row("finish stage: plan, embed, fuse, tag", f"{len(seg_rows)} segments", s)
        stages["decode"].close()
    return rows


def render(record: dict[str, Any]) -> str:
    duration = record["params"]["duration_s"]
    limit = record["rows"][0]["seconds"]
    title = (f"**Stage costs** (`benchmarks/{NAME}.py`): {duration:g} s of 640x360 30 fps video with speech and a "
             f"hard cut every {SCENE_S:g} s; each stage timed once in one process on the CPU, against the decode "
             "limit (a full ffmpeg decode of the same file) measured in the same run.")
    rows = [(r["stage"], r["output"], f"{r['seconds']:.2f}", f"{duration / r['seconds']:.1f}",
             f"{r['seconds'] / limit:.2f}") for r in record["rows"]]
    return block(title, record["machine"], COLUMNS, rows)


def main() -> int:
    ap = parser(NAME, __doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="video length, rounded to whole 10 s scenes")
    ap.add_argument("--quick", action="store_true", help="10 s of video, for tests")
    args = ap.parse_args()
    n_scenes = 1 if args.quick else max(1, round(args.seconds / SCENE_S))
    m = machine()
    rows = measure(n_scenes)
    publish({"benchmark": NAME, "machine": m, "params": {"duration_s": n_scenes * SCENE_S}, "rows": rows},
            render, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
