"""Incremental runs and re-tagging: what a nightly job costs when little has changed.

1. A folder of generated talks is analysed (`vidan analyze`, embedded Ray, the command a
   user runs), then analysed again unchanged: the second run's wall time as a fraction
   of the first, both measured here, side by side.
2. A report of N segments (default 100,000: real schema, random unit embeddings) is
   re-tagged with `vidan tag`: once with a taxonomy never seen (the text model loads to
   embed its prompts) and once more with one seen before (no model at all). Target:
   100,000 segments in under 10 s on a 2-core machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "bench_store"
COLUMNS = ["measure", "what", "seconds", "ratio"]
HEADER = _common.header(COLUMNS)


def _vidan(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidan", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - t


def build_report(out: Path, n_segments: int, per_video: int = 100) -> None:
    """A report like any other (vidan.load_report reads it), with random unit embeddings."""
    import pyarrow as pa

    from vidan.report import DATASETS
    from vidan.store import ReportStore

    store = ReportStore.create(out)
    rng = np.random.default_rng(0)
    n_videos = max(1, n_segments // per_video)
    fsl = lambda m: pa.FixedSizeListArray.from_arrays(pa.array(m.ravel()), m.shape[1])  # noqa: E731
    tag_type = DATASETS["segments"].field("tags").type
    for b in range(0, n_videos, 100):
        vids = [f"{i:032x}" for i in range(b, min(b + 100, n_videos))]
        n = len(vids) * per_video
        emb = rng.standard_normal((n, 384)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        cols = {
            "video_id": pa.array(np.repeat(vids, per_video)),
            "path": pa.array(np.repeat([f"/videos/{v}.mp4" for v in vids], per_video)),
            "segment_index": pa.array(np.tile(np.arange(per_video, dtype=np.int32), len(vids))),
            "start_s": pa.array(np.tile(np.arange(per_video) * 10.0, len(vids))),
            "end_s": pa.array(np.tile(np.arange(per_video) * 10.0 + 10.0, len(vids))),
            "embedding": fsl(emb), "visual_embedding": fsl(emb), "text_embedding": fsl(emb),
            "tags": pa.array([[{"label": "speech", "score": 0.5, "source": "audio", "kind": "audio"}]] * n, tag_type),
            "config_hash": pa.array(["h"] * n), "run_id": pa.array(["bench"] * n),
        }
        st = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in DATASETS["segments"]},
                      schema=DATASETS["segments"])
        vcols = {"video_id": pa.array(vids), "path": pa.array([f"/videos/{v}.mp4" for v in vids]),
                 "status": pa.array(["ok"] * len(vids)), "config_hash": pa.array(["h"] * len(vids)),
                 "run_id": pa.array(["bench"] * len(vids))}
        vt = pa.table({f.name: vcols.get(f.name, pa.nulls(len(vids), f.type)) for f in DATASETS["videos"]},
                      schema=DATASETS["videos"])
        store.commit(add=[store.write_group(vt, st, "bench")], meta={"run_id": "bench"}, tag="bench")
    store.compact(meta={"run_id": "bench"}, tag="bench")
    store.cleanup(started=time.time() + 1)


def build_folder(d: Path, n: int) -> None:
    from vidan import synth
    from vidan.synth import Scene

    names = synth.speech_names()
    photos = ["rocket", "coffee", "chelsea", "astronaut", "camera", "hubble_deep_field"]
    for i in range(n):
        a = synth.concat_audio(d / f"{i}.wav", [(0.5, synth.speech_clip(names[i % len(names)]))])
        synth.write_video(d / f"talk{i}.mp4", [Scene(8.0, synth.photo(photos[i % len(photos)]))], size=(320, 240),
                          audio=a, seed=i)
        a.unlink()


def render(r: dict) -> str:
    inc, tag = r["incremental"], r["retag"]
    rows = [
        ["first run", f"{inc['videos']} new talks of 8 s, `vidan analyze` (embedded Ray)",
         f"{inc['first_s']:.1f}", "1.00"],
        ["second run", "the same folder, unchanged: nothing to analyse",
         f"{inc['second_s']:.1f}", f"{inc['second_s'] / inc['first_s']:.2f}"],
        ["re-tag", f"`vidan tag`, {tag['segments']:,} segments, taxonomy never seen (text model loads)",
         f"{tag['cold_s']:.1f}", "1.00"],
        ["re-tag", f"`vidan tag`, {tag['segments']:,} segments, taxonomy seen before (no model)",
         f"{tag['warm_s']:.1f}", f"{tag['warm_s'] / tag['cold_s']:.2f}"],
    ]
    return _common.block("Incremental runs and re-tagging (`benchmarks/bench_store.py`)", r["machine"], COLUMNS, rows)


def main() -> None:
    ap = _common.parser(NAME, __doc__)
    ap.add_argument("--segments", type=int, default=100_000, help="segments in the re-tagged report")
    ap.add_argument("--videos", type=int, default=4, help="talks in the incremental folder")
    args = ap.parse_args()
    record = {"benchmark": NAME, "machine": _common.machine()}
    tmp = Path(tempfile.mkdtemp(prefix="vidan-bench-store-"))
    try:
        (tmp / "videos").mkdir()
        build_folder(tmp / "videos", args.videos)
        cmd = ["analyze", str(tmp / "videos"), "--out", str(tmp / "rep"), "--quiet"]
        first = _vidan(*cmd)
        second = _vidan(*cmd)
        record["incremental"] = {"videos": args.videos, "first_s": first, "second_s": second}

        build_report(tmp / "big", args.segments)
        build_report(tmp / "small", 100)
        taxa = []
        for k in range(2):
            tax = tmp / f"tax{k}.yaml"
            # a fresh label each run, so the first re-tag really meets an unseen taxonomy
            tax.write_text(f"name: bench{k}\nclasses:\n  - label: space {time.time_ns()}\n"
                           "    prompts: [a rocket launch]\n  - label: drinks\n    prompts: [a cup of coffee]\n"
                           "  - label: animals\n    prompts: [a cat, a dog]\n")
            taxa.append(str(tax))
        cold = _vidan("tag", "--reports", str(tmp / "big"), "--taxonomy", taxa[0])
        _vidan("tag", "--reports", str(tmp / "small"), "--taxonomy", taxa[1])  # embeds the second taxonomy
        warm = _vidan("tag", "--reports", str(tmp / "big"), "--taxonomy", taxa[1])
        record["retag"] = {"segments": args.segments, "cold_s": cold, "warm_s": warm}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _common.publish(record, render, args.json)


if __name__ == "__main__":
    main()
