"""The search index kept with a report: one immutable sidecar per group of part files.

A group's sidecar (``index/part-...vidx``) is written with its part files, before the
commit that lists it, so the index is exactly as atomic as the rows: a commit makes both
live at once, a superseded group takes its sidecar with it, and cleanup deletes unlisted
sidecars as it deletes unlisted part files.

What a query must touch is kept small and apart from what it rarely needs:

- ``basis``: the group's principal directions (uncentred PCA of its fused, visual and
  text vectors together), as many as hold ``CODE_ENERGY`` of their energy (at least
  ``CODE_DIMS_MIN``). Sentence embeddings vary along few directions, so a query's cosine
  is mostly in those few.
- per embedding: the vectors (the ranking's confidence weight multiplied in) projected
  on that basis and quantised to int8 (``codes``, one scale per direction), sorted into
  inverted lists of about ``LIST_ROWS`` by spherical k-means (two levels, so that many
  small lists stay cheap to build), with the lists' centroids. A million segments' codes
  are 64 bytes a vector where 64 directions suffice: a group's are read whole, once.
- ``vectors``: every row's three weighted vectors in float32, side by side, row by row
  (NaN where a row has none): only the candidates' rows are read, to score them exactly.
- ``records``: each row's path, times, transcript and keywords as JSON, what a hit shows
  and the lexical term reads (tags are not here: re-tagging shares the sidecar).

A query projects itself on each group's basis, scores every list's centroid, scores the
codes of the best lists until it has seen ``PROBE_SHARE`` of each embedding's vectors (a
group of one list is always scored: one centroid of a few unlike rows says little),
keeps the best hundred or so rows of each embedding by that estimate, and scores those
rows exactly on all three embeddings from ``vectors``: the score of ``vidan.search.rank``.
Reads are positioned reads of byte ranges, locally and on object stores alike.

File layout: ``VIDX2\\n``, a little-endian uint32 header length, a JSON header naming
each array's dtype, shape and offset (64-byte aligned), then the arrays.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

MAGIC = b"VIDX2\n"
MODALITIES = ("fused", "visual", "text")
COLUMNS = {"fused": "embedding", "visual": "visual_embedding", "text": "text_embedding"}
CODE_ENERGY = 0.95  # share of the vectors' energy the kept directions hold
CODE_DIMS_MIN = 64
LIST_ROWS = 16  # rows per inverted list, about: fine lists tell near copies of a segment from far ones
KMEANS_ITERS = 10
KMEANS_SAMPLE_PER_LIST = 64
EXACT_BELOW = 16_384  # vectors of one embedding: fewer than this are all scored
PROBE_SHARE = 0.10  # ...more than this, a query reads this share of them (at least EXACT_BELOW), best lists first
CANDIDATES_PER_HIT = 10  # rows kept per embedding, per requested hit, by approximate score...
MIN_CANDIDATES = 100  # ...and at least this many, then scored exactly
_ALIGN = 64
_READERS = 8  # positioned reads in flight on a cold query (local disk and object store alike)


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
    mats = {mod: as_matrix(segments.column(COLUMNS[mod])) for mod in MODALITIES}
    mats = {mod: (m, p) for mod, (m, p) in mats.items() if p.any() and m.shape[1]}
    if not mats:
        return None
    dims = {m.shape[1] for m, _ in mats.values()}
    if len(dims) != 1:
        raise ValueError(f"embeddings of different sizes {sorted(dims)}: one query cannot score them all")
    dim = dims.pop()
    arrays: dict[str, np.ndarray] = {"segment_index": segments.column("segment_index").to_numpy().astype(np.int32)}
    vids = segments.column("video_id").to_pylist()
    names = sorted(set(vids))
    code = {v: i for i, v in enumerate(names)}
    arrays["video"] = np.fromiter((code[v] for v in vids), np.int32, n)
    # ids as fixed-width bytes, read only by ``within`` and the row check: a header stays small
    arrays["videos"] = np.array([v.encode() for v in names], dtype=f"S{max(1, max(len(v.encode()) for v in names))}")
    basis = _basis([m[p] for m, p in mats.values()], dim)
    arrays["basis"] = basis
    full = np.full((n, len(MODALITIES), dim), np.nan, np.float32)
    meta = {"rows": n, "dim": dim, "code_dims": int(basis.shape[1]), "modalities": {}}
    for mi, mod in enumerate(MODALITIES):
        if mod not in mats:
            continue
        m, present = mats[mod]
        rows = np.flatnonzero(present).astype(np.int32)
        weighted = m[rows] * w[mod][rows, None]
        full[rows, mi] = weighted
        unit = m[rows] @ basis
        cent, assign = _kmeans(unit, _n_lists(len(rows)))
        order = np.argsort(assign, kind="stable")
        rows, assign = rows[order], assign[order]
        y = weighted[order] @ basis
        scale = np.maximum(np.abs(y).max(0), 1e-12) / 127.0
        arrays[f"{mod}.centroids"] = cent.astype(np.float32)
        arrays[f"{mod}.offsets"] = np.searchsorted(assign, np.arange(len(cent) + 1)).astype(np.int64)
        arrays[f"{mod}.rows"] = rows
        arrays[f"{mod}.scale"] = scale.astype(np.float32)
        arrays[f"{mod}.codes"] = np.clip(np.rint(y / scale), -127, 127).astype(np.int8)
        meta["modalities"][mod] = {"n": int(len(rows)), "lists": int(len(cent))}
    arrays["vectors"] = full
    arrays["records"], arrays["records.offsets"] = _records(segments)
    return _pack(meta, arrays)


def _basis(mats: list[np.ndarray], dim: int) -> np.ndarray:
    """(dim, d) orthonormal: the top principal directions (uncentred) holding CODE_ENERGY."""
    gram = np.zeros((dim, dim), np.float64)
    for m in mats:
        for s in range(0, len(m), 65536):
            x = m[s:s + 65536].astype(np.float32)
            gram += x.T @ x
    vals, vecs = np.linalg.eigh(gram)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    share = np.cumsum(np.maximum(vals, 0)) / max(float(np.maximum(vals, 0).sum()), 1e-30)
    d = int(np.searchsorted(share, CODE_ENERGY) + 1)
    d = min(dim, max(CODE_DIMS_MIN, -(-d // 16) * 16))  # whole 16s: products run on aligned rows
    return np.ascontiguousarray(vecs[:, :d], np.float32)


def _records(segments) -> tuple[np.ndarray, np.ndarray]:
    """Each row's path, start, end, transcript and keywords as JSON, and the byte offsets."""
    cols = [segments.column(c).to_pylist() for c in ("path", "start_s", "end_s", "transcript", "keywords")]
    blobs = [json.dumps([p, s, e, t, k], ensure_ascii=False).encode() for p, s, e, t, k in zip(*cols)]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def _n_lists(n: int) -> int:
    return int(min(4096, max(1, round(n / LIST_ROWS))))


def _kmeans(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means in two levels: about sqrt(k) lists, each split in proportion to
    its rows, so that many small lists cost sqrt(k) products a row, not k.
    (centroids (about k, D), list of each row). Deterministic."""
    top = int(round(np.sqrt(k)))
    if k <= 64 or top >= k:
        return _flat_kmeans(x, k, seed)
    cent, assign = _flat_kmeans(x, top, seed)
    cents, out = [], np.empty(len(x), np.int64)
    for c in range(len(cent)):
        mine = np.flatnonzero(assign == c)
        if not len(mine):
            continue
        sub_c, sub_a = _flat_kmeans(x[mine], max(1, int(round(k * len(mine) / len(x)))), seed)
        out[mine] = sub_a + sum(len(s) for s in cents)
        cents.append(sub_c)
    return np.concatenate(cents), out


def _flat_kmeans(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(x))
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if k <= 1:
        c = unit.mean(0, keepdims=True)
        return c / max(float(np.linalg.norm(c)), 1e-12), np.zeros(len(x), np.int64)
    rng = np.random.default_rng(seed)
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
        layout[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    head = json.dumps({**meta, "arrays": layout}).encode()
    start = -(-(len(MAGIC) + 4 + len(head)) // _ALIGN) * _ALIGN
    buf = bytearray(start + offset)
    buf[:len(MAGIC)] = MAGIC
    buf[len(MAGIC):len(MAGIC) + 4] = struct.pack("<I", len(head))
    buf[len(MAGIC) + 4:len(MAGIC) + 4 + len(head)] = head
    view = memoryview(buf)
    for name, a in arrays.items():
        o = start + layout[name]["offset"]
        view[o:o + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return bytes(buf)


# --- reading ---------------------------------------------------------------------------

class Sidecar:
    """One group's sidecar: small arrays read whole and kept, the rest read by range."""

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
            raise ValueError(f"{key} is not a vidan index sidecar of this version")
        (hlen,) = struct.unpack("<I", head[len(MAGIC):len(MAGIC) + 4])
        end = len(MAGIC) + 4 + hlen
        raw = bytes(head[len(MAGIC) + 4:end] if end <= len(head) else self._read(len(MAGIC) + 4, hlen))
        self.meta = json.loads(raw)
        self._start = -(-end // _ALIGN) * _ALIGN
        self.rows = int(self.meta["rows"])
        self.local = self._fd is not None
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
        """Rows ``rows`` (any order) of an array, reading near ones as one range and no others."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            spec = self.meta["arrays"][name]
            return np.zeros([0, *spec["shape"][1:]], np.dtype(spec["dtype"]))
        order = np.argsort(rows, kind="stable")
        r = rows[order]
        cut = np.flatnonzero(np.diff(r) > 8) + 1  # a gap of a few rows is cheaper read than sought
        parts = [self.array(name, int(s[0]), int(s[-1]) + 1)[s - s[0]] for s in np.split(r, cut)]
        out = np.concatenate(parts)
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return out[back]

    def records(self, rows: np.ndarray) -> list[list]:
        """[path, start_s, end_s, transcript, keywords] of each of ``rows``."""
        off = self.gather("records.offsets", np.concatenate([rows, np.asarray(rows) + 1])).reshape(2, -1)
        spec = self.meta["arrays"]["records"]
        base = self._start + spec["offset"]
        return [json.loads(self._read(base + int(a), int(b - a))) for a, b in zip(*off)]

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

    def take(self, keep) -> "Candidates":
        return Candidates(self.group[keep], self.row[keep], self.score[keep], self.modality[keep])

    def within_reach(self, top: int, bonus: float) -> "Candidates":
        """Those that a bonus of at most ``bonus`` (the lexical term) could still lift into
        the best ``top``: fewer rows to read and to score words in."""
        if len(self.score) <= top:
            return self
        kth = np.partition(-self.score, top - 1)[top - 1] * -1
        return self.take(self.score >= kth - bonus)


def _empty() -> Candidates:
    return Candidates(*(np.zeros(0, t) for t in (np.int64, np.int64, np.float32, np.int64)))


class ReportIndex:
    """The sidecars of one commit, searched together."""

    def __init__(self, groups: Sequence, sidecars: Sequence[Sidecar]):
        self.groups = list(groups)
        self.sidecars = list(sidecars)
        self.offsets = np.concatenate([[0], np.cumsum([s.rows for s in self.sidecars])]).astype(np.int64)
        self._coarse: Optional[dict] = None

    @classmethod
    def open(cls, store, manifest) -> Optional["ReportIndex"]:
        """The index of ``manifest``'s groups; None when a group with segments has no sidecar
        of this version (a report written before): search then reads the embedding columns."""
        groups = [g for g in manifest.groups if g.segments]
        if any(getattr(g, "index", None) is None for g in groups):
            return None
        # a cold query opens every group's sidecar: the opens overlap
        with _pool() as pool:
            try:
                sidecars = list(pool.map(lambda g: Sidecar(store.storage, g.index), groups))
            except ValueError:  # an older sidecar layout: that report searches its columns
                return None
        return cls(groups, sidecars)

    def _lists(self) -> dict:
        """Per embedding, every group's centroids stacked, with each list's group
        and size; and each group's basis and code scales (read once, kept)."""
        if self._coarse is None:
            def small(sc):
                out = {"basis": sc.small("basis")}
                for mod in MODALITIES:
                    if sc.has(mod):
                        for a in ("centroids", "offsets", "scale"):
                            out[f"{mod}.{a}"] = sc.small(f"{mod}.{a}")
                return out

            with _pool() as pool:
                per = list(pool.map(small, self.sidecars))
            coarse = {"basis": [p["basis"] for p in per]}
            for mod in MODALITIES:
                gs = [gi for gi, p in enumerate(per) if f"{mod}.offsets" in p]
                if not gs:
                    continue
                coarse[mod] = {
                    "cent": [per[gi][f"{mod}.centroids"] for gi in gs],
                    "groups": np.concatenate([np.full(len(per[gi][f"{mod}.centroids"]), gi) for gi in gs]),
                    "sizes": np.concatenate([np.diff(per[gi][f"{mod}.offsets"]) for gi in gs]),
                    "lone": np.concatenate([np.full(len(per[gi][f"{mod}.centroids"]),
                                                    len(per[gi][f"{mod}.centroids"]) == 1) for gi in gs]),
                    "offsets": {gi: per[gi][f"{mod}.offsets"] for gi in gs},
                    "scale": {gi: per[gi][f"{mod}.scale"] for gi in gs},
                    "order": gs,
                }
            self._coarse = coarse
        return self._coarse

    def probe_budget(self, total: int) -> int:
        return total if total < EXACT_BELOW else int(max(EXACT_BELOW, PROBE_SHARE * total))

    def search(self, q: np.ndarray, top: int, rows: Optional[dict[int, np.ndarray]] = None,
               exact: bool = False, probe: Optional[int] = None) -> Candidates:
        """The best ``top``-ish rows for unit query ``q``, scored exactly as ``rank`` scores
        them (more than ``top``: the caller adds the lexical term and cuts). ``rows``
        restricts to those rows of each group number (``within``), all scored; ``exact``
        scores every row; ``probe`` is how many vectors of each embedding to read (default:
        ``probe_budget``)."""
        from vidan.models.text_fast import blas_threads

        q = np.asarray(q, np.float32)
        keep = max(MIN_CANDIDATES, CANDIDATES_PER_HIT * top)
        # one query's products are small: BLAS threads would only wait on each other
        with blas_threads(1):
            if rows is not None:
                return self._score(q, {gi: np.asarray(r, np.int64) for gi, r in rows.items()})
            if exact:
                return self._exhaustive(q, keep)
            found = self._probe(q, keep, probe)
            return self._score(q, found)

    def _probe(self, q: np.ndarray, keep: int, probe: Optional[int]) -> dict[int, np.ndarray]:
        """Group -> rows whose approximate score (int8 codes) is among the best ``keep`` of
        some embedding, scoring only the best lists."""
        coarse = self._lists()
        qp = [q @ b for b in coarse["basis"]]  # the query on each group's directions
        jobs: dict[str, np.ndarray] = {}
        for mod in MODALITIES:
            c = coarse.get(mod)
            if c is None:
                continue
            sizes = c["sizes"]
            cs = np.concatenate([cent @ qp[gi] for gi, cent in zip(c["order"], c["cent"])])
            need = probe or self.probe_budget(int(sizes.sum()))
            if need >= int(sizes.sum()):
                chosen = np.arange(len(cs))
            else:
                # a group of one list (a few rows) is always read: its one centroid says little
                key = -np.where(c["lone"], np.inf, cs)
                # sorting every centroid costs more than the rest of a warm query: sort only
                # about as many as the budget needs (all of them if that proves too few)
                m = min(len(key), int(need / max(1.0, float(sizes.mean())) * 2) + 64)
                part = np.argpartition(key, m - 1)[:m] if m < len(key) else np.arange(len(key))
                order = part[np.argsort(key[part], kind="stable")]
                if int(sizes[order].sum()) < need:
                    order = np.argsort(key, kind="stable")
                chosen = order[:int(np.searchsorted(np.cumsum(sizes[order]), need)) + 1]
            jobs[mod] = np.sort(chosen)  # group after group, as the codes lie

        # a group's codes are read whole, once (a sequential read of a few hundred KB), and
        # kept: the lists say which rows to score, and a warm query reads nothing again
        found: dict[int, list] = {}
        for mod, chosen in jobs.items():
            pos, s, gi = self._scan(mod, chosen, qp, keep)
            for grp in np.unique(gi):
                at = gi == grp
                rows = self.sidecars[int(grp)].small(f"{mod}.rows")[np.sort(pos[at])]
                found.setdefault(int(grp), []).append(rows)
        return {g: np.unique(np.concatenate(r)) for g, r in found.items()}

    def _codes(self, mod: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every group's codes of ``mod`` in one array (read in parallel, once, and kept),
        where each group's and each list's rows start in it. Rows are as wide as the
        widest group's (a narrower group's are zero-padded: the padding scores nothing)."""
        key = f"_codes.{mod}"
        if key not in self._coarse:
            c = self._coarse[mod]
            with _pool() as pool:
                parts = list(pool.map(lambda gi: self.sidecars[gi].array(f"{mod}.codes"), c["order"]))
            width = max(p.shape[1] for p in parts)
            stacked = np.zeros((sum(len(p) for p in parts), width), np.int8)
            starts = np.zeros(len(self.sidecars) + 1, np.int64)
            at = 0
            for gi, p in zip(c["order"], parts):
                stacked[at:at + len(p), :p.shape[1]] = p
                starts[gi] = at
                at += len(p)
            lstart = np.concatenate([starts[gi] + c["offsets"][gi][:-1] for gi in c["order"]])
            self._coarse[key] = (stacked, starts, lstart)
        return self._coarse[key]

    def _scan(self, mod: str, chosen: np.ndarray, qp: list, keep: int):
        """The approximate scores of the rows of lists ``chosen`` (sorted): the best
        ``keep`` as (position in its group's codes, score, group)."""
        c = self._coarse[mod]
        codes, starts, lstart = self._codes(mod)
        lo, n = lstart[chosen], c["sizes"][chosen]
        total = int(n.sum())
        if not total:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        # the rows of every chosen list, in one index array, group after group
        at = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(total)
        gi = np.repeat(c["groups"][chosen], n)
        pos = at - starts[gi]
        x = codes[at].astype(np.float32)
        s = np.empty(total, np.float32)
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(gi)) + 1, [total]])
        width = codes.shape[1]
        for a, b in zip(bounds[:-1], bounds[1:]):
            grp = int(gi[a])
            w = qp[grp] * c["scale"][grp]
            s[a:b] = x[a:b, :len(w)] @ w if len(w) < width else x[a:b] @ w
        if total > keep:
            best = np.argpartition(-s, keep - 1)[:keep]
            pos, s, gi = pos[best], s[best], gi[best]
        return pos, s, gi

    def _score(self, q: np.ndarray, rows: dict[int, np.ndarray]) -> Candidates:
        """``rows`` of each group scored exactly on all three embeddings: the best is the
        score, as in ``rank``."""
        def one(item):
            gi, r = item
            s = self.sidecars[gi].gather("vectors", r) @ q  # (k, 3); NaN where a row lacks it
            return gi, r, np.where(np.isnan(s), -np.inf, s)

        items = [(gi, r) for gi, r in rows.items() if len(r)]
        if all(self.sidecars[gi].local for gi, _ in items):
            done = [one(i) for i in items]  # a local read is microseconds: threads only add their hand-offs
        else:
            with _pool() as pool:  # an object store answers in milliseconds: overlap them
                done = list(pool.map(one, items))
        if not done:
            return _empty()
        s = np.concatenate([d[2] for d in done])
        group = np.concatenate([np.full(len(d[1]), d[0], np.int64) for d in done])
        row = np.concatenate([d[1] for d in done]).astype(np.int64)
        c = Candidates(group, row, s.max(1).astype(np.float32), s.argmax(1))
        return c.take(np.isfinite(c.score))

    def _exhaustive(self, q: np.ndarray, keep: int) -> Candidates:
        """Every row of every group scored exactly (brute force), a group at a time."""
        best = _empty()
        for gi, sc in enumerate(self.sidecars):
            for lo in range(0, sc.rows, 16384):
                hi = min(sc.rows, lo + 16384)
                s = sc.array("vectors", lo, hi) @ q
                s = np.where(np.isnan(s), -np.inf, s)
                c = Candidates(np.full(hi - lo, gi, np.int64), np.arange(lo, hi, dtype=np.int64),
                               s.max(1).astype(np.float32), s.argmax(1))
                c = c.take(np.isfinite(c.score))
                both = Candidates(*(np.concatenate([a, b]) for a, b in zip(
                    (best.group, best.row, best.score, best.modality), (c.group, c.row, c.score, c.modality))))
                best = both.take(np.argpartition(-both.score, keep - 1)[:keep]) if len(both) > keep else both
        return best

    def segment_index(self, group: np.ndarray, row: np.ndarray) -> np.ndarray:
        return np.array([self.sidecars[g].small("segment_index")[r] for g, r in zip(group, row)], np.int64)

    def video_id(self, group: np.ndarray, row: np.ndarray) -> list[str]:
        return [self.sidecars[g].videos()[self.sidecars[g].small("video")[r]] for g, r in zip(group, row)]

    def records(self, group: np.ndarray, row: np.ndarray) -> list[list]:
        """[path, start_s, end_s, transcript, keywords] of each (group, row), in order."""
        out: list = [None] * len(row)

        def one(gi):
            at = np.flatnonzero(group == gi)
            return at, self.sidecars[int(gi)].records(row[at])

        with _pool() as pool:
            for at, recs in pool.map(one, np.unique(group)):
                for i, r in zip(at, recs):
                    out[i] = r
        return out

    def rows_of(self, video_ids: Sequence[str]) -> dict[int, np.ndarray]:
        """Group number -> rows of those videos (for ``within``)."""
        want = set(video_ids)
        out = {}
        for gi, sc in enumerate(self.sidecars):
            codes = [i for i, v in enumerate(sc.videos()) if v in want]
            if codes:
                out[gi] = np.flatnonzero(np.isin(sc.small("video"), codes))
        return out


_POOL = None


class _SharedPool:
    """The module's reader threads, started once: starting threads for every query costs
    more than the reads they overlap. ``with`` leaves them running."""

    def __enter__(self):
        global _POOL
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="vidan-index")
        return _POOL

    def __exit__(self, *exc):
        return False


def _pool() -> _SharedPool:
    # reads and BLAS release the GIL: a cold query's reads overlap
    return _SharedPool()
