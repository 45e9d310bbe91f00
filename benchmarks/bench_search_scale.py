"""Search at scale: a million segments, searched from a cold start and warm, index beside brute force.

Builds a synthetic report from a real one: every segment of REPORT once as it is, then
copies of its videos (new ids and paths) whose three embeddings are blends of the
original with another real segment (up to half of the other) plus a little noise along
a few shared directions, until the report holds N segments. Real collections of
sentence embeddings vary along few directions (their intrinsic dimension is low); noise
in all 384 dimensions would make every copy of a segment equally far from any query, so
that "the 10 nearest" of 250,000 copies is decided by noise and no index short of
reading every vector can name them (the README gives that figure too). The original
segments stay the best answers to their own queries.

Queries are the real report's transcripts and a few plain phrases. For each method:
a cold ``vidan search`` (a new Python process: imports, model load, query) after every
file of the report has been dropped from the page cache (``posix_fadvise(DONTNEED)``:
the report comes from disk, as on a first search after a reboot), the same with the
report's files still cached, the peak memory of those processes, the latency of one
query on a loaded report (``Report.search``, one process, model loaded; the median) over
a first pass of the queries, whose re-scored vectors partly come from disk because the
cold runs dropped them, and over a second pass (warm: a notebook session's steady
state), and recall@10
against exact search (every segment's float32 embeddings from the parquet columns with
the lexical term, as ``vidan.search.rank`` scores them). Cold figures are the median of
``--cold-runs`` processes, each with another query. The exact methods read every vector
each query: their passes are the first ``EXACT_QUERIES`` queries only.

    .venv/bin/python benchmarks/bench_search_scale.py --from REPORT [--segments N] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _common import block, header, machine, parser, publish

from vidan.index import PROBE_SHARE

NAME = "bench_search_scale"
COLUMNS = ("method", "segments", "cold `vidan search` s (cache dropped)", "cold `vidan search` s (cached)",
           "peak memory GB", "first pass ms", "warm query ms", "recall@10", "originals found")
HEADER = header(COLUMNS)
GROUP_SEGMENTS = 8192  # segments per group (a run's batch); the index keeps one sidecar per group
GROUPS_PER_COMMIT = 8
BLEND = 0.5  # a copy is (1 - w) * original + w * another segment, w uniform in [0, BLEND]
NOISE = 0.1  # std of the noise along each shared direction
SUBSPACE = 8  # shared directions the noise lies along
PHRASES = ["a rocket lifting off into the sky", "a strong cup of coffee", "a tabby cat", "someone talking about football",
           "a man on a motorcycle", "bread and yeast", "the weather tomorrow", "a clock on the wall"]
# exact search (float32 columns, whole) is not run past this: it holds N x 4.6 KB in memory
COLUMNS_MAX = 200_000
EXACT_QUERIES = 8  # queries an exact method is timed on warm (each reads every vector)


def _fsl(m: np.ndarray, present: np.ndarray, dim: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1), pa.float32()), dim, mask=pa.array(~present))


def build_report(src: str, out: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """Write the synthetic report of ``n`` segments into ``out`` (see the module doc)."""
    from vidan.report import DATASETS, as_matrix
    from vidan.store import ReportStore

    rng = np.random.default_rng(seed)
    real = ReportStore.open(src)
    segs = real.read_table("segments")
    vids = real.read_table("videos")
    if segs.num_rows == 0:
        raise SystemExit(f"{src} has no segments to replicate")
    store = ReportStore.create(out)
    if store.latest().groups:
        raise SystemExit(f"{out} already holds a report: give an empty --out")
    t0 = time.perf_counter()
    # the originals, as they are
    pending = [store.write_group(vids, segs, "orig")]
    with_segs = vids.filter(pc.is_in(vids.column("video_id"), segs.column("video_id").unique()))
    per_video = {v: np.flatnonzero(np.asarray(segs.column("video_id").to_pylist()) == v)
                 for v in with_segs.column("video_id").to_pylist()}
    order = list(per_video)
    vrow_of = {v: i for i, v in enumerate(with_segs.column("video_id").to_pylist())}
    vpaths = with_segs.column("path").to_pylist()
    mats = {c: as_matrix(segs.column(c)) for c in ("embedding", "visual_embedding", "text_embedding")}
    dim = next(iter(mats.values()))[0].shape[1]
    basis = np.linalg.qr(rng.standard_normal((dim, SUBSPACE)))[0].astype(np.float32)
    done, copy, commits = segs.num_rows, 0, 1

    def flush(final=False):
        nonlocal pending, commits
        if pending and (final or len(pending) >= GROUPS_PER_COMMIT):
            store.commit(add=pending, meta={"run_id": "bench-scale"}, tag="bench")
            pending, commits = [], commits + 1

    while done < n:
        rows, vrows, new_ids, paths, seg_ids, seg_paths = [], [], [], [], [], []
        while done + len(rows) < n and len(rows) < GROUP_SEGMENTS:
            v = order[copy % len(order)]
            vid = hashlib.blake2b(f"{v}/{copy}".encode(), digest_size=16).hexdigest()
            vrow = vrow_of[v]
            path = f"/copies/{copy // len(order):07d}/{vpaths[vrow].lstrip('/')}"
            take = per_video[v][: n - done - len(rows)]
            rows.extend(take.tolist())
            vrows.append(vrow)
            new_ids.append(vid)
            paths.append(path)
            seg_ids += [vid] * len(take)
            seg_paths += [path] * len(take)
            copy += 1
        idx = np.asarray(rows)
        st = segs.take(pa.array(idx))
        for c, (m, present) in mats.items():
            other = rng.choice(np.flatnonzero(present), len(idx)) if present.any() else idx
            w = rng.uniform(0.0, BLEND, len(idx)).astype(np.float32)[:, None]
            x = (1 - w) * m[idx] + w * m[other]
            x += (rng.standard_normal((len(idx), SUBSPACE)).astype(np.float32) * NOISE) @ basis.T
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            st = st.set_column(st.schema.get_field_index(c), c, _fsl(x, present[idx], m.shape[1]))
        st = st.set_column(st.schema.get_field_index("video_id"), "video_id", pa.array(seg_ids))
        st = st.set_column(st.schema.get_field_index("path"), "path", pa.array(seg_paths))
        vt = with_segs.take(pa.array(vrows))
        vt = vt.set_column(vt.schema.get_field_index("video_id"), "video_id", pa.array(new_ids))
        vt = vt.set_column(vt.schema.get_field_index("path"), "path", pa.array(paths))
        pending.append(store.write_group(vt.cast(DATASETS["videos"]), st.cast(DATASETS["segments"]), "bench"))
        done += len(idx)
        flush()
    flush(final=True)
    m = store.latest()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"segments": m.n_segments, "videos": m.n_videos, "groups": len(m.groups), "commits": commits,
            "originals": segs.num_rows, "build_s": time.perf_counter() - t0, "bytes": size}


def reused(src: str, out: Path) -> dict[str, Any]:
    from vidan.store import ReportStore

    m = ReportStore.open(out).latest()
    if m.run_id != "bench-scale":
        raise SystemExit(f"{out} was not built by this script")
    return {"segments": m.n_segments, "videos": m.n_videos, "groups": len(m.groups), "commits": m.version,
            "originals": ReportStore.open(src).latest().n_segments, "build_s": None, "reused": True}


def queries(src: str) -> list[str]:
    from vidan.store import ReportStore

    t = ReportStore.open(src).read_table("segments", ["transcript"])
    said = [s.strip() for s in t.column("transcript").to_pylist() if isinstance(s, str) and s.strip()]
    return list(dict.fromkeys(said + PHRASES))


def exact_hits(out: Path, qs: list[str], encoder, k: int = 10) -> list[list[tuple]]:
    """Exact search, one group at a time (float32 columns, ``rank``'s scores, lexical term
    included), so that a million segments never sit in memory at once."""
    from vidan.report import Report
    from vidan.search import SEARCH_COLUMNS, rank
    from vidan.store import ReportStore

    store = ReportStore.open(out)
    m = store.latest()
    qv = encoder.encode(qs)
    best: list[list] = [[] for _ in qs]
    for g in m.groups:
        if not g.segments:
            continue
        t = store._read_files([g.segments], store_schema(), SEARCH_COLUMNS)
        empty = {"videos": pa.table({"video_id": pa.array([], pa.string())}),
                 "skipped": pa.table({"path": pa.array([], pa.string())})}
        frame = Report.from_tables(str(out), {"segments": t, **empty}, runs=[]).segments
        for i, q in enumerate(qs):
            best[i] += [(h.score, h.video_id, h.segment_index) for h in rank(qv[i], frame, top=k, query=q)]
            best[i] = sorted(best[i], key=lambda x: -x[0])[:k]
    return [[(v, s) for _, v, s in b] for b in best]


def store_schema():
    from vidan.report import DATASETS

    return DATASETS["segments"]


def cold_cli(out: Path, query: str, method: str) -> tuple[float, list]:
    """Wall seconds of a fresh process answering one query, and its hits."""
    if method == "index":
        cmd = [sys.executable, "-m", "vidan", "search", query, "--reports", str(out), "--top", "10", "--json"]
    else:  # the other methods have no command-line switch: the same call, from a fresh process
        code = ("import json,sys; from vidan.search import search; "
                "[print(json.dumps([h.video_id, h.segment_index])) for h in "
                f"search(sys.argv[1], sys.argv[2], top=10, method={method!r})]")
        cmd = [sys.executable, "-c", code, query, str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr.decode()[-2000:]}")
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
    return wall, [(d["video_id"], d["segment_index"]) if isinstance(d, dict) else tuple(d) for d in lines]


def drop_cache(out: Path) -> None:
    """Drop every file of the report from the page cache: the next read comes from disk.
    (Dirty pages are not dropped: they are written first.)"""
    for root, _, files in os.walk(out):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_cold(out: Path, query: str, method: str, dropped: bool = False) -> dict:
    """A cold process in its own wrapper, so each method's peak RSS is its own; with
    ``dropped``, the report's files are first dropped from the page cache."""
    if dropped:
        drop_cache(out)
    # the wrapper's only child is the search: its peak RSS is RUSAGE_CHILDREN's
    code = ("import json,sys,resource;"
            "sys.path.insert(0, sys.argv[1]);"
            "from bench_search_scale import cold_cli;"
            "w,h=cold_cli(sys.argv[2],sys.argv[3],sys.argv[4]);"
            "print(json.dumps({'wall_s':w,'rss_gb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024**2,"
            "'hits':h}))")
    r = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(out), query, method],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def warm(out: Path, qs: list[str], method: str, encoder) -> tuple[float, float, list]:
    """Median ms of one query on a loaded report over a first pass of the queries (the
    re-scored vectors' pages partly still on disk: the cold runs before dropped them) and
    over a second pass (the steady state of a notebook session), and every query's hits."""
    import vidan
    from vidan.search import META_COLUMNS
    from vidan.search import search as lib_search

    qs = qs if method == "index" else qs[:EXACT_QUERIES]
    if method == "index":
        rep = vidan.load_report(out, columns={"segments": META_COLUMNS, "videos": ["video_id"], "skipped": ["path"]})
        rep._encoder = encoder
        rep.search(qs[0], k=10)  # first query reads the index's small arrays and the rows it shows: loading

        def one(q):
            df = rep.search(q, k=10)
            return list(zip(df["video_id"].astype(str), df["segment_index"].astype(int)))
    else:
        def one(q):
            return [(h.video_id, h.segment_index) for h in lib_search(q, out, top=10, encoder=encoder, method=method)]

    passes = []
    for _ in range(2):
        hits, times = [], []
        for q in qs:
            t0 = time.perf_counter()
            hits.append(one(q))
            times.append(time.perf_counter() - t0)
        passes.append(float(np.median(times) * 1000))
    return passes[0], passes[1], hits


def recall(got: list[list], truth: list[list]) -> float:
    """Mean share of the exact top 10 found (over the queries ``got`` has: zip stops there)."""
    return float(np.mean([len(set(map(tuple, g)) & set(map(tuple, t))) / max(1, len(t)) for g, t in zip(got, truth)]))


def render(r: dict) -> str:
    b = r["build"]
    rows = []

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    for m in r["methods"]:
        rows.append([m["label"], f"{b['segments']:,}", f(m["dropped_s"], ".2f"), f(m["cold_s"], ".2f"),
                     f(m["rss_gb"], ".2f"), f(m.get("first_pass_ms"), ".1f"), f(m["warm_ms"], ".1f"), f(m["recall10"], ".3f"), f(m["originals"], ".2f")])
    title = (f"Search at scale (`benchmarks/bench_search_scale.py`): {b['segments']:,} segments in {b['groups']} groups "
             f"({b['originals']} real, the rest blended copies), {r['n_queries']} queries, cold figures the median "
             f"of {r['cold_runs']} processes; load average {r['load']}")
    return block(title, r["machine"], COLUMNS, rows)


METHODS = {"index": f"index: int8 codes, {PROBE_SHARE:.0%} probed, exact re-score (`vidan search`)",
           "exact": "exact: every float32 vector of the index",
           "columns": "exact, float32 embedding columns"}


def main() -> None:
    ap = parser(NAME, __doc__)
    ap.add_argument("--from", dest="src", required=True, metavar="REPORT", help="a real report to replicate")
    ap.add_argument("--segments", type=int, default=20_000, help="segments in the synthetic report")
    ap.add_argument("--out", type=Path, help="where to build it (default: a temporary folder, removed after)")
    ap.add_argument("--cold-runs", type=int, default=3, help="cold processes per method and cache state (median)")
    ap.add_argument("--reuse", action="store_true",
                    help="measure the report an earlier run of this script left in --out instead of building one")
    args = ap.parse_args()
    if args.reuse and args.out is None:
        ap.error("--reuse needs --out")
    from vidan.models.text_fast import load_fast_text_encoder

    record: dict[str, Any] = {"benchmark": NAME, "machine": machine()}
    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="vidan-bench-search-"))
        out = tmp / "report"
    try:
        record["build"] = reused(args.src, out) if args.reuse else build_report(args.src, out, args.segments)
        print(f"built {record['build']}", file=sys.stderr)
        qs = queries(args.src)
        record["n_queries"] = len(qs)
        enc = load_fast_text_encoder()
        truth = exact_hits(out, qs, enc)
        real = ReportOriginals(args.src)
        record["methods"] = []
        record["cold_runs"] = args.cold_runs
        for method, label in METHODS.items():
            big = method == "columns" and record["build"]["segments"] > COLUMNS_MAX
            colds, dropped = [], []
            # brute force reads every vector: one cold process of each kind says enough
            runs = 0 if big else args.cold_runs if method == "index" else 1
            for i in range(runs):
                dropped.append(run_cold(out, qs[(2 * i) % len(qs)], method, dropped=True))
                colds.append(run_cold(out, qs[(2 * i + 1) % len(qs)], method))
            first, ms, hits = (None, None, None) if big else warm(out, qs, method, enc)
            print(f"{method}: dropped {dropped} cached {colds} first pass {first} warm {ms}", file=sys.stderr)
            med = (lambda xs: float(np.median([x["wall_s"] for x in xs])) if xs else None)
            record["methods"].append({
                "method": method, "label": label, "dropped_s": med(dropped), "cold_s": med(colds),
                "cold_runs_s": [x["wall_s"] for x in dropped + colds],
                "rss_gb": max((x["rss_gb"] for x in dropped + colds), default=None),
                "first_pass_ms": first, "warm_ms": ms, "recall10": None if hits is None else recall(hits, truth),
                "originals": None if hits is None else real.found(qs, hits)})
        record["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    publish(record, render, args.json)


class ReportOriginals:
    """Which real segment answers each query best, and whether a method's top 10 holds it."""

    def __init__(self, src: str):
        from vidan.store import ReportStore

        t = ReportStore.open(src).read_table("segments", ["video_id", "segment_index", "transcript"])
        self.said = {}
        for v, i, s in zip(*(t.column(c).to_pylist() for c in ("video_id", "segment_index", "transcript"))):
            if isinstance(s, str) and s.strip():
                self.said.setdefault(s.strip(), (v, i))

    def found(self, qs: list[str], hits: list[list]) -> float:
        """Share of transcript queries whose own segment is among the hits."""
        pairs = [(self.said[q], h) for q, h in zip(qs, hits) if q in self.said]
        return float(np.mean([tuple(want) in set(map(tuple, h)) for want, h in pairs])) if pairs else float("nan")


if __name__ == "__main__":
    main()
