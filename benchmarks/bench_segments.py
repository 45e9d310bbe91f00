"""Shot detection and segment plans against videos with known cuts and speech.

    .venv/bin/python benchmarks/bench_segments.py [--keep DIR] [--json PATH]

Makes a few videos (real photos, pans, hard cuts, fades, variable frame rate) with
bundled English speech laid so that several cuts fall inside sentences; finds the cuts
with ``vidan.shots.ShotDetector`` on frames scanned at 8 fps, 96 px wide; gets word
times from the bundled Whisper base model; then plans segments three ways and prints
one markdown table, with the true cut times themselves as a reference row:

* boundaries against the true cuts (precision / recall / F1 at 0.5 s; hard cuts and
  fades apart and together). Length splits and fixed windows are not cuts, so they
  count against precision: that is the price of the plan, shown on purpose;
* words cut by a boundary (a word with a boundary strictly inside it);
* F1 against the fixed windows (the plan that looks at nothing), measured in the same run;
* detector time per minute of video (decoding apart), in the table's title.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from _common import block, header, machine, parser, publish

from vidan import synth
from vidan.config import AsrConfig, SegmentConfig, ShotConfig
from vidan.records import Cut, Word
from vidan.segments import boundary_cuts_word, plan_segments
from vidan.shots import ShotDetector
from vidan.synth import Scene

NAME = "bench_segments"
COLUMNS = ("boundaries from", "P", "R", "F1", "P cut", "R cut", "P fade", "R fade", "segments", "words cut",
           "F1 vs fixed")
HEADER = header(COLUMNS)
TOLERANCE_S = 0.5
SCAN_FPS = 8.0
SCAN_WIDTH = 96
PLANS = ("fixed", "shots", "shots+speech")


@dataclass
class Case:
    name: str
    scenes: list[Scene]
    speech: list[tuple[float, str]]  # (start_s, bundled clip)
    frame_times: Optional[list[float]] = None

    @property
    def duration_s(self) -> float:
        return float(sum(s.duration_s for s in self.scenes))

    def truth(self) -> list[Cut]:
        """A scene change is a fade when either side fades through black, else a hard cut."""
        out = []
        t = 0.0
        for a, b in zip(self.scenes, self.scenes[1:]):
            t += a.duration_s
            out.append(Cut(t, "fade" if (a.fade_out_s > 0 or b.fade_in_s > 0) else "cut"))
        return out


def cases() -> list[Case]:
    p = {n: synth.photo(n) for n in ("coffee", "chelsea", "rocket", "astronaut")}
    news = Case(
        "news",
        [Scene(6.0, p["coffee"]), Scene(5.0, p["chelsea"]), Scene(7.0, p["rocket"], fade_out_s=1.0),
         Scene(8.0, p["astronaut"], fade_in_s=1.0), Scene(4.0, (200, 40, 40)), Scene(26.0, p["coffee"]),
         Scene(4.0, (40, 40, 200))],
        # coffee spans the cut at 6.0, cat the one at 11.0, rocket the fade at 18.0,
        # weather and bread run through the 26 s shot (length split), football the cut at 56.0.
        [(3.5, "coffee"), (9.5, "cat"), (16.0, "rocket"), (31.0, "weather"), (38.0, "bread"), (44.0, "football"),
         (53.5, "coffee")],
    )
    # Variable frame rate: bursts at 30 fps and stretches at 5 fps, with short shots.
    rng = np.random.default_rng(7)
    times, t = [], 0.0
    while t < 40.0:
        times.append(round(t, 3))
        t += float(rng.choice([1 / 30, 1 / 30, 0.2]))
    montage = Case(
        "montage-vfr",
        [Scene(3.0, p["astronaut"]), Scene(2.5, p["rocket"]), Scene(4.0, p["chelsea"], fade_out_s=0.5),
         Scene(5.0, p["coffee"], fade_in_s=0.5), Scene(3.5, (30, 160, 60)), Scene(6.0, p["rocket"]),
         Scene(2.0, p["chelsea"]), Scene(14.0, p["astronaut"])],
        [(1.0, "bread"), (8.0, "cat"), (17.0, "weather"), (24.5, "football"), (31.0, "rocket")],
        frame_times=times,
    )
    return [news, montage]


def make(case: Case, folder: Path) -> Path:
    audio = synth.concat_audio(folder / f"{case.name}.wav", [(t, synth.speech_clip(n)) for t, n in case.speech])
    return synth.write_video(folder / f"{case.name}.mp4", case.scenes, audio=audio,
                             frame_times=case.frame_times)


def scan(path: Path) -> tuple[list[tuple[float, np.ndarray]], float]:
    """The frames the pipeline's shot scan sees (``decode_part``'s ``on_scan``), and the time it took."""
    from vidan.config import FrameConfig
    from vidan.media.frames import decode_part
    from vidan.media.probe import probe
    from vidan.records import Span

    start = time.perf_counter()
    out: list[tuple[float, np.ndarray]] = []
    info = probe(path)
    decode_part(path, info, Span(0.0, info.duration_s),
                FrameConfig(backend="pyav", scan_fps=SCAN_FPS, scan_width=SCAN_WIDTH),
                on_scan=lambda t, img: out.append((t, img)))
    return out, time.perf_counter() - start


class WordSource:
    """Word times from ``vidan.models.asr`` when it exists, else faster-whisper directly."""

    def __init__(self):
        self.how = "none"
        self._asr = None
        self._fw = None
        try:
            from vidan.models.asr import load_asr

            self._asr = load_asr(AsrConfig(language="en"))
            self.how = f"vidan.models.asr ({getattr(self._asr, 'model_id', 'whisper')})"
            return
        except ImportError:
            pass
        from faster_whisper import WhisperModel

        from vidan.models.cache import whisper_base_dir

        self._fw = WhisperModel(str(whisper_base_dir()), device="cpu", compute_type="int8", local_files_only=True)
        self.how = "faster-whisper base (direct)"

    def words(self, path: Path) -> list[Word]:
        audio = synth.read_audio(path, 16000)
        if self._asr is not None:
            return list(self._asr.transcribe(audio, offset_s=0.0).words)
        segments, _ = self._fw.transcribe(audio, language="en", word_timestamps=True, vad_filter=True,
                                          condition_on_previous_text=False)
        return [Word(w.start, w.end, w.word, w.probability) for s in segments for w in (s.words or [])]


def match(found: list[float], truth: list[float], tol: float = TOLERANCE_S) -> list[tuple[int, int]]:
    """One-to-one matches (found index, truth index), closest pairs first."""
    pairs = sorted((abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth) if abs(f - t) <= tol)
    used_f, used_t, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


@dataclass
class Tally:
    tp: int = 0
    n_found: int = 0
    n_truth: int = 0

    def add(self, tp: int, n_found: int, n_truth: int) -> None:
        self.tp += tp
        self.n_found += n_found
        self.n_truth += n_truth

    def prf(self) -> tuple[Optional[float], Optional[float], Optional[float]]:
        p = self.tp / self.n_found if self.n_found else None
        r = self.tp / self.n_truth if self.n_truth else None
        f = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
        return p, r, f


def score(found: list[tuple[float, str]], truth: list[Cut], tallies: dict[str, Tally]) -> None:
    """``found``: (time, kind) with kind "cut", "fade" or anything else (windows, splits)."""
    pairs = match([t for t, _ in found], [c.t_s for c in truth])
    tallies["all"].add(len(pairs), len(found), len(truth))
    for kind in ("cut", "fade"):
        # A boundary of this kind that hits a true boundary of this kind; recall by true kind.
        tp = sum(1 for i, j in pairs if found[i][1] == kind and truth[j].kind == kind)
        tallies[kind].add(tp, sum(1 for _, k in found if k == kind), sum(1 for c in truth if c.kind == kind))


def fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(argv: Optional[list[str]] = None) -> int:
    ap = parser(NAME, __doc__)
    ap.add_argument("--keep", type=Path, help="write the videos here and keep them")
    ap.add_argument("--only", choices=[c.name for c in cases()], help="one video only (a quick check, not a result)")
    args = ap.parse_args(argv)
    m = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        record = run(folder, [c for c in cases() if args.only in (None, c.name)])
    publish({"benchmark": NAME, "machine": m, **record}, render, args.json)
    return 0


def run(folder: Path, todo: list[Case]) -> dict[str, Any]:
    words_src = WordSource()
    default = SegmentConfig()
    names = {"truth": "true cut times (reference)", "detector": "ShotDetector cuts",
             **{p: f"plan {p}" + (" (default)" if p == default.plan else "") for p in PLANS}}
    tallies = {name: {k: Tally() for k in ("all", "cut", "fade")} for name in names}
    words_cut = {name: 0 for name in names}
    n_segments: dict[str, Optional[int]] = {name: 0 for name in names}
    n_segments["detector"] = None
    n_words = 0
    total_s = decode_s = detect_s = 0.0
    n_frames = 0
    details = []
    for case in todo:
        path = make(case, folder)
        frames, dt = scan(path)
        decode_s += dt
        n_frames += len(frames)
        t0 = time.perf_counter()
        det = ShotDetector(ShotConfig())
        for t, img in frames:
            det.push(t, img)
        cuts = det.finish()
        detect_s += time.perf_counter() - t0
        total_s += case.duration_s
        truth = case.truth()
        words = words_src.words(path)
        n_words += len(words)
        score([(c.t_s, c.kind) for c in truth], truth, tallies["truth"])
        words_cut["truth"] += boundary_cuts_word([c.t_s for c in truth], words)
        n_segments["truth"] += len(truth) + 1
        score([(c.t_s, c.kind) for c in cuts], truth, tallies["detector"])
        words_cut["detector"] += boundary_cuts_word([c.t_s for c in cuts], words)
        detail = {"video": case.name, "duration_s": case.duration_s, "words": len(words),
                  "truth": [(round(c.t_s, 2), c.kind) for c in truth],
                  "found": [(round(c.t_s, 2), c.kind) for c in cuts]}
        times = [t for t, _ in frames]
        for plan in PLANS:
            segs = plan_segments(case.duration_s, replace(default, plan=plan), cuts, words, times)
            kind = {"shot_cut": "cut", "fade": "fade"}
            found = [(s.start_s, kind.get(s.reason, s.reason)) for s in segs[1:]]
            score(found, truth, tallies[plan])
            words_cut[plan] += boundary_cuts_word([s.start_s for s in segs[1:]], words)
            n_segments[plan] += len(segs)
            detail[plan] = [(round(s.start_s, 2), s.reason) for s in segs[1:]]
        details.append(detail)
    rows = [{"key": k, "name": names[k], **{kind: vars(t) for kind, t in tallies[k].items()},
             "segments": n_segments[k], "words_cut": words_cut[k]} for k in names]
    return {"params": {"tolerance_s": TOLERANCE_S, "scan_fps": SCAN_FPS, "scan_width": SCAN_WIDTH,
                       "videos": [c.name for c in todo], "video_s": total_s, "words_from": words_src.how},
            "rows": rows, "n_words": n_words, "n_frames": n_frames, "detect_s": detect_s, "decode_s": decode_s,
            "details": details}


def render(record: dict[str, Any]) -> str:
    p = record["params"]
    minutes = p["video_s"] / 60
    title = (f"**Segment boundaries** (`benchmarks/{NAME}.py`): {p['video_s']:.0f} s of generated video in "
             f"{len(p['videos'])} file(s) ({', '.join(p['videos'])}; `-vfr`: variable frame rate) with known "
             "hard cuts and fades, cuts placed inside sentences on purpose; precision/recall at "
             f"{p['tolerance_s']:g} s; words from {p['words_from']}; default configs. Length splits and "
             "fixed windows are not cuts and count against precision. Words cut: words with a boundary "
             "strictly inside them. F1 against the fixed windows, measured in the same run. ShotDetector: "
             f"{record['detect_s'] / minutes:.3f} s per minute of video ({record['n_frames']} frames at "
             f"~{p['scan_fps']:g} fps, {p['scan_width']} px wide), on top of "
             f"{record['decode_s'] / minutes:.3f} s per minute for the PyAV decode and scan.")
    base = Tally(**next(r for r in record["rows"] if r["key"] == "fixed")["all"]).prf()[2]
    cells = []
    for r in record["rows"]:
        p_all, r_all, f_all = Tally(**r["all"]).prf()
        pc, rc, _ = Tally(**r["cut"]).prf()
        pf, rf, _ = Tally(**r["fade"]).prf()
        vs = f"{f_all / base:.2f}" if base and f_all is not None else "-"
        segs = "-" if r["segments"] is None else str(r["segments"])
        cells.append((r["name"], fmt(p_all), fmt(r_all), fmt(f_all), fmt(pc), fmt(rc), fmt(pf), fmt(rf), segs,
                      f"{r['words_cut']} / {record['n_words']}", vs))
    return block(title, record["machine"], COLUMNS, cells)


if __name__ == "__main__":
    sys.exit(main())
