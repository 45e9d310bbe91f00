"""The search index kept with a report: one immutable sidecar per group of part files.

A group's sidecar (``index/part-...vidx``) is written with its part files, before the
commit that lists it, so the index is exactly as atomic as the rows: a commit makes both
live at once, a superseded group takes its sidecar with it, and cleanup deletes unlisted
sidecars as it deletes unlisted part files.

A sidecar holds, for each of the three embeddings search scores (fused, visual, text),
the group's vectors (float32: numpy has no fast float16 product, and converting costs
more than reading twice the bytes) with the ranking's confidence weight already
multiplied in, sorted into inverted lists by a small spherical k-means (one list for a
small group, about 2 sqrt(n) lists for a large one), with the lists' centroids. A query scores every
centroid of every group, reads only the best lists until it has seen a budget of vectors
(positioned reads of those ranges, locally and on object stores alike), takes the best rows of each
embedding, and scores those rows on all three embeddings: the same score as
``vidan.search.rank``. A report of up to ``EXACT_BELOW`` vectors
of an embedding is searched exhaustively.

File layout: ``VIDX1\\n``, a little-endian uint32 header length, a JSON header naming
each array's dtype, shape and offset (64-byte aligned), then the arrays.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

MAGIC = b"VIDX1\n"
MODALITIES = ("fused", "visual", "text")
COLUMNS = {"fused": "embedding", "visual": "visual_embedding", "text": "text_embedding"}
ONE_LIST_BELOW = 4096  # a group smaller than this is one list: nothing to gain from clustering
KMEANS_ITERS = 10
KMEANS_SAMPLE_PER_LIST = 64
EXACT_BELOW = 16_384  # vectors of one embedding: fewer than this are all scored
PROBE_SHARE = 0.05  # ...more than this, a query reads this share of them (at least EXACT_BELOW), best lists first
CANDIDATES_PER_HIT = 10  # rows kept per embedding, per requested hit, before the exact re-score
MIN_CANDIDATES = 100
_ALIGN = 64


# --- writing ---------------------------------------------------------------------------

def weights(segments) -> dict[str, np.ndarray]:
    """The factor ``vidan.search.rank`` multiplies each embedding's cosine by (confidence)."""
    import pyarrow.compute as pc

    def col(name, fill):
        return np.nan_to_num(pc.fill_null(segments.column(name), fill).to_numpy(zero_copy_only=False)
                             .astype(np.float32), nan=fill)

    conf = np.sqrt(col("visual_confidence", 1.0))
    vw = col("visual_weight", 0.0)
    return {"fused": 1.0 - vw + vw * conf, "visual": conf, "text": np.ones(segments.num_rows, np.float32)}


def build(segments) -> Optional[bytes]:
    """The sidecar of one group's segments table (Arrow), or None when it has no vectors."""
    from vidan.report import as_matrix

    n = segments.num_rows
    if n == 0:
        return None
    w = weights(segments)
    arrays: dict[str, np.ndarray] = {"segment_index": segments.column("segment_index").to_numpy().astype(np.int32)}
    vids = segments.column("video_id").to_pylist()
    names = sorted(set(vids))
    code = {v: i for i, v in enumerate(names)}
    arrays["video"] = np.fromiter((code[v] for v in vids), np.int32, n)
    # ids as fixed-width bytes, read only by ``within`` and the row check: a header stays small
    arrays["videos"] = np.array([v.encode() for v in names], dtype=f"S{max(1, max(len(v.encode()) for v in names))}")
    meta = {"rows": n, "modalities": {}}
    for mod in MODALITIES:
        m, present = as_matrix(segments.column(COLUMNS[mod]))
        rows = np.flatnonzero(present).astype(np.int32)
        if not len(rows):
            continue
        vecs = m[rows]
        cent, assign = _kmeans(vecs, _n_lists(len(rows)))
        order = np.argsort(assign, kind="stable")
        rows, assign = rows[order], assign[order]
        offsets = np.searchsorted(assign, np.arange(len(cent) + 1)).astype(np.int64)
        pos = np.full(n, -1, np.int32)
        pos[rows] = np.arange(len(rows), dtype=np.int32)
        arrays[f"{mod}.centroids"] = cent.astype(np.float32)
        arrays[f"{mod}.offsets"] = offsets
        arrays[f"{mod}.rows"] = rows
        arrays[f"{mod}.pos"] = pos
        arrays[f"{mod}.vectors"] = (m[rows] * w[mod][rows, None]).astype(np.float32)
        meta["modalities"][mod] = {"n": int(len(rows)), "lists": int(len(cent)), "dim": int(m.shape[1])}
    if not meta["modalities"]:
        return None
    return _pack(meta, arrays)


def _n_lists(n: int) -> int:
    return 1 if n < ONE_LIST_BELOW else int(min(4096, round(2 * np.sqrt(n))))


def _kmeans(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means: (centroids (k, D), list of each row). Deterministic."""
    if k <= 1:
        c = x.mean(0, keepdims=True)
        return c / max(float(np.linalg.norm(c)), 1e-12), np.zeros(len(x), np.int64)
    rng = np.random.default_rng(seed)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sample = unit[rng.choice(len(x), min(len(x), k * KMEANS_SAMPLE_PER_LIST), replace=False)]
    c = sample[rng.choice(len(sample), k, replace=False)].copy()
    for _ in range(KMEANS_ITERS):
        a = (sample @ c.T).argmax(1)
        order = np.argsort(a, kind="stable")
        counts = np.bincount(a, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        empty = counts == 0
        sums = np.zeros_like(c)
        if (~empty).any():
            sums[~empty] = np.add.reduceat(sample[order], starts[~empty], axis=0)
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]  # an empty list restarts elsewhere
        c = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    assign = np.empty(len(x), np.int64)
    for s in range(0, len(x), 65536):
        assign[s:s + 65536] = (unit[s:s + 65536] @ c.T).argmax(1)
    return c, assign


def _pack(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    layout, offset = {}, 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        layout[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    head = json.dumps({**meta, "arrays": layout}).encode()
    start = -(-(len(MAGIC) + 4 + len(head)) // _ALIGN) * _ALIGN
    buf = bytearray(start + offset)
    buf[:len(MAGIC)] = MAGIC
    buf[len(MAGIC):len(MAGIC) + 4] = struct.pack("<I", len(head))
    buf[len(MAGIC) + 4:len(MAGIC) + 4 + len(head)] = head
    for name, a in arrays.items():
        o = start + layout[name]["offset"]
        raw = np.ascontiguousarray(a).tobytes()
        buf[o:o + len(raw)] = raw
    return bytes(buf)


# --- reading ---------------------------------------------------------------------------

class Sidecar:
    """One group's sidecar: small arrays read whole, vectors read by list on demand."""

    def __init__(self, storage, key: str):
        self._fd = None
        self._file = None
        root = getattr(storage, "root", None)
        if root is not None:
            # positioned reads, not a memory map: a map's pages (and the kernel's read-ahead
            # around each) count as the process's memory; a read costs only what it returns
            self._fd = os.open(storage.path(key), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        else:
            fs, base = storage.arrow()
            self._file = fs.open_input_file(f"{base}/{key}")
        head = self._read(0, 4096)
        if head[:len(MAGIC)] != MAGIC:
            raise ValueError(f"{key} is not a vidan index sidecar")
        (hlen,) = struct.unpack("<I", head[len(MAGIC):len(MAGIC) + 4])
        end = len(MAGIC) + 4 + hlen
        raw = bytes(head[len(MAGIC) + 4:end] if end <= len(head) else self._read(len(MAGIC) + 4, hlen))
        self.meta = json.loads(raw)
        self._start = -(-end // _ALIGN) * _ALIGN
        self.rows = int(self.meta["rows"])
        self._small: dict[str, np.ndarray] = {}

    def __del__(self):
        if self._fd is not None:
            os.close(self._fd)

    def _read(self, offset: int, n: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, n, offset)
        return self._file.read_at(n, offset)

    def array(self, name: str, lo: Optional[int] = None, hi: Optional[int] = None) -> np.ndarray:
        """Array ``name``, or its rows ``lo:hi`` (read alone, not the whole array)."""
        spec = self.meta["arrays"][name]
        dt = np.dtype(spec["dtype"])
        shape = list(spec["shape"])
        row = dt.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        lo = 0 if lo is None else lo
        hi = shape[0] if hi is None else hi
        data = self._read(self._start + spec["offset"] + lo * row, (hi - lo) * row)
        return np.frombuffer(data, dt).reshape([hi - lo, *shape[1:]])

    def small(self, name: str) -> np.ndarray:
        if name not in self._small:
            self._small[name] = np.array(self.array(name))
        return self._small[name]

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted or not) of a 2-d array, without reading the rest."""
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo <= 4 * len(rows):
            return self.array(name, lo, hi)[rows - lo]
        return np.concatenate([self.array(name, int(r), int(r) + 1) for r in rows])

    def videos(self) -> list[str]:
        if "videos" not in self._small:
            self._small["videos"] = [v.decode() for v in self.array("videos").tolist()]
        return self._small["videos"]

    def has(self, mod: str) -> bool:
        return mod in self.meta["modalities"]


def _key(group: int, rows: np.ndarray) -> np.ndarray:
    return (np.int64(group) << 32) | rows.astype(np.int64)


@dataclass
class Candidates:
    """The best rows found: group number, row in the group's segments file, score (with
    the confidence weight, no lexical term) and the embedding that gave it."""

    group: np.ndarray
    row: np.ndarray
    score: np.ndarray
    modality: np.ndarray  # index into MODALITIES

    def __len__(self) -> int:
        return len(self.row)

    def within_reach(self, top: int, bonus: float) -> "Candidates":
        """Those that a bonus of at most ``bonus`` (the lexical term) could still lift into
        the best ``top``: fewer rows to read and to score words in."""
        if len(self.score) <= top:
            return self
        kth = np.partition(-self.score, top - 1)[top - 1] * -1
        keep = self.score >= kth - bonus
        return Candidates(self.group[keep], self.row[keep], self.score[keep], self.modality[keep])


class ReportIndex:
    """The sidecars of one commit, searched together."""

    def __init__(self, groups: Sequence, sidecars: Sequence[Sidecar]):
        self.groups = list(groups)
        self.sidecars = list(sidecars)
        self.offsets = np.concatenate([[0], np.cumsum([s.rows for s in self.sidecars])]).astype(np.int64)
        self._coarse: dict[str, tuple] = {}

    @classmethod
    def open(cls, store, manifest) -> Optional["ReportIndex"]:
        """The index of ``manifest``'s groups; None when a group with segments has no sidecar
        (a report written before vidan kept one): search then reads the embedding columns."""
        groups = [g for g in manifest.groups if g.segments]
        if any(getattr(g, "index", None) is None for g in groups):
            return None
        return cls(groups, [Sidecar(store.storage, g.index) for g in groups])

    def _lists(self, mod: str):
        """All groups' centroids of ``mod`` stacked, with each list's group, number and size."""
        if mod not in self._coarse:
            cents, gs, ls, sizes = [], [], [], []
            for gi, sc in enumerate(self.sidecars):
                if not sc.has(mod):
                    continue
                off = sc.small(f"{mod}.offsets")
                cents.append(sc.small(f"{mod}.centroids"))
                gs.append(np.full(len(off) - 1, gi))
                ls.append(np.arange(len(off) - 1))
                sizes.append(np.diff(off))
            if cents:
                self._coarse[mod] = (np.concatenate(cents), np.concatenate(gs), np.concatenate(ls),
                                     np.concatenate(sizes))
            else:
                self._coarse[mod] = None
        return self._coarse[mod]

    def search(self, q: np.ndarray, top: int, rows: Optional[dict[int, np.ndarray]] = None,
               exact: bool = False, probe: Optional[int] = None) -> Candidates:
        """The best ``top``-ish rows for unit query ``q`` (more than ``top``: the caller adds
        the lexical term and cuts). ``rows`` restricts to those rows of each group number
        (``within``), scored exhaustively; ``exact`` scores every vector; ``probe`` is how
        many vectors of each embedding to read (default: ``probe_budget``)."""
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        q = np.asarray(q, np.float32)
        keep = max(MIN_CANDIDATES, CANDIDATES_PER_HIT * top)

        def one(mod):
            blocks = self._restricted(mod, rows) if rows is not None else self._probe(mod, q, exact, probe)
            if not blocks:
                return np.zeros(0, np.int64), (np.zeros(0, np.int64), np.zeros(0, np.float32))
            s = np.concatenate([np.asarray(b[2], np.float32) @ q for b in blocks])
            key = np.concatenate([_key(gi, self.sidecars[gi].small(f"{mod}.rows")[p]) for gi, p, _ in blocks])
            best = np.argpartition(-s, keep - 1)[:keep] if len(s) > keep else np.arange(len(s))
            o = np.argsort(key)
            return key[best], (key[o], s[o])

        # one query's products are small: BLAS threads would only wait on each other; the
        # three embeddings are read and scored side by side instead (reads and BLAS release the GIL)
        with threadpool_limits(1, user_api="blas"):
            for mod in MODALITIES:  # centroids first, in this thread: cached for the next query
                self._lists(mod)
            with ThreadPoolExecutor(max_workers=len(MODALITIES)) as pool:
                done = list(pool.map(one, MODALITIES))
            found = [f for f, _ in done if len(f)]
            if not found:
                return Candidates(*(np.zeros(0, t) for t in (np.int64, np.int64, np.float32, np.int64)))
            return self._rescore(q, np.unique(np.concatenate(found)), [seen for _, seen in done])

    def probe_budget(self, total: int) -> int:
        return total if total < EXACT_BELOW else int(max(EXACT_BELOW, PROBE_SHARE * total))

    def _restricted(self, mod: str, rows: dict[int, np.ndarray]) -> list:
        blocks = []
        for gi, r in rows.items():
            sc = self.sidecars[gi]
            if not sc.has(mod):
                continue
            p = sc.small(f"{mod}.pos")[r]
            p = np.sort(p[p >= 0])
            if len(p):
                blocks.append((gi, p, sc.gather(f"{mod}.vectors", p)))
        return blocks

    def _probe(self, mod: str, q: np.ndarray, exact: bool, probe: Optional[int]) -> list:
        coarse = self._lists(mod)
        if coarse is None:
            return []
        cent, gs, ls, sizes = coarse
        need = int(sizes.sum()) if exact else (probe or self.probe_budget(int(sizes.sum())))
        if need >= int(sizes.sum()):
            chosen = np.arange(len(cent))
        else:
            order = np.argsort(-(cent @ q), kind="stable")
            chosen = order[:int(np.searchsorted(np.cumsum(sizes[order]), need)) + 1]
        spans: list[list[int]] = []  # [group, lo, hi]: neighbouring lists of a group read as one range
        for li in sorted(chosen.tolist(), key=lambda j: (gs[j], ls[j])):
            gi, l = int(gs[li]), int(ls[li])
            off = self.sidecars[gi].small(f"{mod}.offsets")
            lo, hi = int(off[l]), int(off[l + 1])
            if hi <= lo:
                continue
            if spans and spans[-1][0] == gi and spans[-1][2] == lo:
                spans[-1][2] = hi
            else:
                spans.append([gi, lo, hi])
        return [(gi, np.arange(lo, hi), self.sidecars[gi].array(f"{mod}.vectors", lo, hi)) for gi, lo, hi in spans]

    def _rescore(self, q: np.ndarray, cand: np.ndarray, seen: list) -> Candidates:
        """Every candidate on all three embeddings: the best is its score, as in ``rank``.
        Scores already computed are looked up; the rest are read (a few rows)."""
        group, row = cand >> 32, cand & 0xFFFFFFFF
        scores = np.full((len(MODALITIES), len(cand)), -np.inf, np.float32)
        for mi, mod in enumerate(MODALITIES):
            keys, s = seen[mi]
            at = np.minimum(np.searchsorted(keys, cand), max(len(keys) - 1, 0))
            hit = (keys[at] == cand) if len(keys) else np.zeros(len(cand), bool)
            scores[mi, hit] = s[at[hit]]
            for gi in np.unique(group[~hit]):
                sc = self.sidecars[int(gi)]
                if not sc.has(mod):
                    continue
                j = np.flatnonzero(~hit & (group == gi))
                p = sc.small(f"{mod}.pos")[row[j]]
                ok = p >= 0
                if ok.any():
                    scores[mi, j[ok]] = sc.gather(f"{mod}.vectors", p[ok]).astype(np.float32) @ q
        return Candidates(group, row, scores.max(0), scores.argmax(0))

    def segment_index(self, group: np.ndarray, row: np.ndarray) -> np.ndarray:
        return np.array([self.sidecars[g].small("segment_index")[r] for g, r in zip(group, row)], np.int64)

    def video_id(self, group: np.ndarray, row: np.ndarray) -> list[str]:
        return [self.sidecars[g].videos()[self.sidecars[g].small("video")[r]] for g, r in zip(group, row)]

    def rows_of(self, video_ids: Sequence[str]) -> dict[int, np.ndarray]:
        """Group number -> rows of those videos (for ``within``)."""
        want = set(video_ids)
        out = {}
        for gi, sc in enumerate(self.sidecars):
            codes = [i for i, v in enumerate(sc.videos()) if v in want]
            if codes:
                out[gi] = np.flatnonzero(np.isin(sc.small("video"), codes))
        return out
