"""Search quality: does a query about something said, or something seen, find its video?

Builds seven short videos in which the picture and the speech are about *different*
things (a cat on screen while someone talks about the weather), so a "seen" query can
only be answered by the frames and a "said" one only by the speech. Runs the real
pipeline (``--local``), then scores each query with several rankings side by side:
single modalities, their plain maximum, and the default (maximum with the classifier's
confidence and a lexical bonus). Prints one markdown table: top-1 accuracy and mean
reciprocal rank, with top-1 against the plain maximum of the three (the baseline).

    .venv/bin/python benchmarks/bench_search.py [--json PATH]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import block, header, machine, parser, publish

from vidan import synth
from vidan.search import Ranking
from vidan.synth import Scene

NAME = "bench_search"
COLUMNS = ("ranking", "top-1 said", "top-1 seen", "top-1 all", "MRR", "top-1 vs max of three")
HEADER = header(COLUMNS)


def _gray(img: np.ndarray) -> np.ndarray:
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]


def pictures() -> dict[str, np.ndarray]:
    import skimage.data as d

    return {"cat": d.chelsea(), "coffee": d.coffee(), "rocket": d.rocket(), "motorcycle": d.stereo_motorcycle()[0],
            "clock": _gray(d.clock()), "astronaut": d.astronaut(), "cameraman": _gray(d.camera())}


# video name: (picture, speech clip or None)
VIDEOS = {
    "v1": ("cat", "weather"),
    "v2": ("coffee", "football"),
    "v3": ("rocket", "bread"),
    "v4": ("motorcycle", "cat"),
    "v5": ("clock", "rocket"),
    "v6": ("astronaut", None),
    "v7": ("cameraman", "coffee"),
}
SAID = [  # paraphrases, not the words spoken
    ("it will rain and blow hard in the mountains", "v1"),
    ("fans celebrating a goal at the stadium", "v2"),
    ("ingredients for baking a loaf", "v3"),
    ("my pet naps on the couch in the afternoon", "v4"),
    ("a launch into the sky", "v5"),
    ("drinking a hot drink in the morning", "v7"),
]
SEEN = [
    ("a cat", "v1"),
    ("an espresso in a cup", "v2"),
    ("a missile taking off", "v3"),
    ("a motorbike", "v4"),
    ("a clock", "v5"),
    ("a woman in a space suit", "v6"),
    ("a man with a camera on a tripod", "v7"),
]
RANKINGS = {
    "text only": Ranking(modalities=("text",), lexical_weight=0.0, confidence=False),
    "visual only": Ranking(modalities=("visual",), lexical_weight=0.0, confidence=False),
    "fused only": Ranking(modalities=("fused",), lexical_weight=0.0, confidence=False),
    "max of three": Ranking(lexical_weight=0.0, confidence=False),
    "max + confidence": Ranking(lexical_weight=0.0),
    "default (+ lexical)": Ranking(),
}
BASELINE = "max of three"
DEFAULT = "default (+ lexical)"


def build(folder: Path) -> None:
    pics = pictures()
    for name, (pic, clip) in VIDEOS.items():
        audio = None
        if clip:
            audio = synth.concat_audio(folder / f"{name}.wav", [(0.5, synth.speech_clip(clip))])
        synth.write_video(folder / f"{name}.mp4", [Scene(7.0, pics[pic])], audio=audio)
        if audio:
            audio.unlink()


def measure() -> dict[str, Any]:
    import vidan
    from vidan.models.text import load_text_encoder
    from vidan.search import SEARCH_COLUMNS, rank

    with tempfile.TemporaryDirectory(prefix="vidan-search-") as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        build(tmp / "videos")
        t0 = time.perf_counter()
        vidan.analyze(tmp / "videos", out=tmp / "report", executor="local")
        analyse_s = time.perf_counter() - t0
        seg = vidan.load_report(tmp / "report", columns={"segments": SEARCH_COLUMNS, "videos": ["video_id"],
                                                         "skipped": ["path"]}).segments
    enc = load_text_encoder()
    queries = [("said", q, v) for q, v in SAID] + [("seen", q, v) for q, v in SEEN]
    emb = enc.encode([q for _, q, _ in queries])
    rows = []
    for name, ranking in RANKINGS.items():
        found = []
        for (kind, q, want), e in zip(queries, emb):
            hits = rank(e, seg, top=len(seg), query=q, ranking=ranking)
            videos = list(dict.fromkeys(Path(h.path).stem for h in hits))
            rr = 1.0 / (videos.index(want) + 1) if want in videos else 0.0
            found.append({"kind": kind, "query": q, "want": want, "first": videos[0] if videos else None, "rr": rr})
        rows.append({"ranking": name, "queries": found})
    return {"analyse_s": analyse_s, "rows": rows}


def render(record: dict[str, Any]) -> str:
    def top1(qs):
        return float(np.mean([q["rr"] == 1.0 for q in qs]))

    rows = record["rows"]
    base = top1(next(r for r in rows if r["ranking"] == BASELINE)["queries"])
    misses = [f"{q['query']!r} (first: {q['first']}, wanted {q['want']})"
              for q in next(r for r in rows if r["ranking"] == DEFAULT)["queries"] if q["rr"] < 1.0]
    title = (f"**Search quality** (`benchmarks/{NAME}.py`): {len(VIDEOS)} videos whose picture and speech are about "
             f"different things; {len(SAID)} paraphrased \"said\" queries, {len(SEEN)} \"seen\" queries; top-1 = the "
             f"right video ranked first; MRR = mean reciprocal rank; rankings side by side on one report, against "
             f"\"{BASELINE}\" (analysis took {record['analyse_s']:.0f} s). Missed by \"{DEFAULT}\": "
             + ("; ".join(misses) if misses else "none") + ".")
    cells = []
    for r in rows:
        qs = r["queries"]
        t = top1(qs)
        cells.append((r["ranking"], f"{top1([q for q in qs if q['kind'] == 'said']):.2f}",
                      f"{top1([q for q in qs if q['kind'] == 'seen']):.2f}", f"{t:.2f}",
                      f"{np.mean([q['rr'] for q in qs]):.2f}", f"{t / base:.2f}" if base else "-"))
    return block(title, record["machine"], COLUMNS, cells)


def main() -> int:
    args = parser(NAME, __doc__).parse_args()
    m = machine()
    publish({"benchmark": NAME, "machine": m, **measure()}, render, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
