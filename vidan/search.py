"""Search a report: embed the query in the shared space, score every segment.

Each segment is scored against its fused, visual and text embeddings; the best of the
three is the segment's score and names the modality that matched. A query about
something said meets the transcript embedding; one about something seen meets the
visual one; the fused vector catches queries that need both.

A small lexical term adds to that: the share of the query's content words that occur
in the segment's transcript or keywords. Dense sentence embeddings blur rare names and
exact words ("Kowalski", "yeast"); hybrid dense + lexical ranking is the usual cure.

A report written by this vidan carries a search index (``vidan.index``): the dense
scores come from it for a candidate set, and the lexical term re-ranks those candidates.
A report without one is scored row by row from its embedding columns, as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SEARCH_COLUMNS = ["video_id", "path", "segment_index", "start_s", "end_s", "transcript", "tag_labels",
                  "keywords", "embedding", "visual_embedding", "text_embedding", "visual_confidence",
                  "visual_weight", "text_weight"]
# what a hit shows and the lexical term reads: no embedding column, the index has those
META_COLUMNS = ["video_id", "path", "segment_index", "start_s", "end_s", "transcript", "tag_labels", "keywords"]
LEXICAL_WEIGHT = 0.15
_MODALITY_COLUMNS = {"fused": "embedding", "visual": "visual_embedding", "text": "text_embedding"}


@dataclass(frozen=True)
class Ranking:
    """How segments are scored; the defaults are what ``vidan search`` uses.

    The other settings exist so that ``benchmarks/bench_search.py`` can measure each
    ingredient against the whole.
    """

    modalities: tuple[str, ...] = ("fused", "visual", "text")
    lexical_weight: float = LEXICAL_WEIGHT
    confidence: bool = True


@dataclass(frozen=True)
class Hit:
    path: str
    video_id: str
    segment_index: int
    start_s: float
    end_s: float
    score: float
    modality: str  # the embedding that matched best: fused | visual | text
    transcript: Optional[str]
    tags: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def _matrix(col) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 matrix of an embedding column, and a mask of the rows that had a value."""
    from vidan.report import as_matrix

    return as_matrix(col)


def _terms(text) -> set[str]:
    from vidan.tags import content_words

    return {_stem(w) for w in content_words(text)} if isinstance(text, str) else set()


def _stem(word: str) -> str:
    # plural and possessive endings only: enough for "cats" to meet "cat"
    for end in ("'s", "es", "s"):
        if word.endswith(end) and len(word) - len(end) >= 3:
            return word[: -len(end)]
    return word


def lexical_overlap(query: str, segments) -> np.ndarray:
    """Share of the query's content words found in each segment's transcript or keywords."""
    q = _terms(query)
    out = np.zeros(len(segments), np.float32)
    if not q:
        return out
    seen: dict[tuple, float] = {}
    for i, (text, kws) in enumerate(zip(segments["transcript"], segments["keywords"])):
        kw = " ".join(kws) if kws is not None and len(kws) else None
        key = (text if isinstance(text, str) else None, kw)
        if key not in seen:
            # a stem is a prefix of a lower-cased word: one absent as a substring is absent as a word
            low = f"{key[0] or ''} {kw or ''}".lower()
            if not any(t in low for t in q):
                seen[key] = 0.0
            else:
                seen[key] = len(q & (_terms(key[0]) | _terms(kw))) / len(q)
        out[i] = seen[key]
    return out


def rank(query_embedding: np.ndarray, segments, top: int = 10, query: str = "",
         ranking: Ranking = Ranking()) -> list[Hit]:
    """Rank the rows of a segments frame (with ``SEARCH_COLUMNS``) against a unit query vector."""
    if len(segments) == 0:
        return []
    q = np.asarray(query_embedding, np.float32)
    scores = []
    for modality, column in _MODALITY_COLUMNS.items():
        m, present = _matrix(segments[column])
        s = np.full(len(segments), -np.inf, np.float32)
        if m.shape[1] and modality in ranking.modalities:
            s[present] = m[present] @ q
        scores.append(s)
    # An unsure classifier's picture should claim less: scale what the frames contribute
    # by the square root of their confidence (fused: only the visual share of it).
    if ranking.confidence:
        conf = np.sqrt(np.nan_to_num(segments["visual_confidence"].to_numpy(np.float32, na_value=np.nan), nan=1.0))
        vw = np.nan_to_num(segments["visual_weight"].to_numpy(np.float32, na_value=np.nan), nan=0.0)
        scores[0] = scores[0] * (1.0 - vw + vw * conf)
        scores[1] = scores[1] * conf
    stacked = np.stack(scores)  # (3, N)
    best = stacked.max(axis=0)
    if ranking.lexical_weight:
        best = best + ranking.lexical_weight * lexical_overlap(query, segments)
    which = stacked.argmax(axis=0)
    names = list(_MODALITY_COLUMNS)
    order = [i for i in np.argsort(-best, kind="stable") if np.isfinite(best[i])][:top]
    return [_hit(segments.iloc[i], best[i], names[which[i]]) for i in order]


def rank_candidates(cands, segments, top: int = 10, query: str = "",
                    lexical_weight: float = LEXICAL_WEIGHT) -> list[Hit]:
    """Hits from the index's candidates (``vidan.index.Candidates``) and their rows of a
    segments frame with ``META_COLUMNS``, one row per candidate: the dense score plus the
    lexical term, as ``rank`` scores them."""
    from vidan.index import MODALITIES

    order, best = _best(cands, segments, top, query, lexical_weight)
    return [_hit(segments.iloc[i], best[i], MODALITIES[int(cands.modality[i])]) for i in order]


def _best(cands, segments, top: int, query: str, lexical_weight: float) -> tuple[list[int], np.ndarray]:
    """The candidates' positions, best first (at most ``top``), and their final scores."""
    if len(segments) == 0:
        return [], np.zeros(0, np.float32)
    best = np.asarray(cands.score, np.float32).copy()
    if lexical_weight:
        best = best + lexical_weight * lexical_overlap(query, segments)
    return [i for i in np.argsort(-best, kind="stable") if np.isfinite(best[i])][:top], best


def _hit(r, score: float, modality: str) -> Hit:
    """One segment row as a hit."""
    tags = r["tag_labels"]
    return Hit(path=r["path"], video_id=r["video_id"], segment_index=int(r["segment_index"]),
               start_s=float(r["start_s"]), end_s=float(r["end_s"]), score=float(score), modality=modality,
               transcript=r["transcript"] if isinstance(r["transcript"], str) else None,
               tags=[] if tags is None else list(tags))


def candidate_rows(store, index, cands, columns=META_COLUMNS):
    """``columns`` of each candidate's segment row, read from the row groups that hold them only."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = store.storage.arrow()

    def read(gi):
        mine = np.flatnonzero(cands.group == gi)
        rows = cands.row[mine]
        f = pq.ParquetFile(f"{base}/{index.groups[int(gi)].segments}", filesystem=fs)
        ends = np.cumsum([f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)])
        rgs = np.unique(np.searchsorted(ends, rows, side="right"))
        t = f.read_row_groups(rgs.tolist(), columns=list(columns), use_threads=False)
        starts = np.concatenate([[0], ends])[rgs]
        # row r of the file sits in the read table after the rows of earlier chosen row groups
        local = np.cumsum(np.concatenate([[0], ends[rgs] - starts]))[:-1]
        where = np.searchsorted(ends[rgs], rows, side="right")
        return mine, t.take(pa.array(local[where] + rows - starts[where]))

    # hits are spread over many files: their reads overlap (Arrow releases the GIL)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(read, np.unique(cands.group)))
    table = pa.concat_tables([t for _, t in parts])
    order = np.argsort(np.concatenate([m for m, _ in parts]))
    return table.take(pa.array(order)).to_pandas()


def _indexed_hits(store, index, cands, top: int, query: str) -> list[Hit]:
    """Hits of the index's candidates: what the lexical term reads and a hit shows comes
    from the sidecars' records (a few small reads); only the tags of the final hits are
    read from the part files (re-tagging changes them, not the sidecar)."""
    import pandas as pd

    from vidan.index import MODALITIES

    recs = index.records(cands.group, cands.row)
    frame = pd.DataFrame(recs, columns=["path", "start_s", "end_s", "transcript", "keywords"])
    order, best = _best(cands, frame, top, query, LEXICAL_WEIGHT)
    if not order:
        return []
    final = cands.take(np.asarray(order))
    frame = frame.iloc[order].reset_index(drop=True)
    frame["video_id"] = index.video_id(final.group, final.row)
    frame["segment_index"] = index.segment_index(final.group, final.row)
    frame["tag_labels"] = candidate_rows(store, index, final, ["tag_labels"])["tag_labels"].to_numpy()
    return [_hit(frame.iloc[i], best[j], MODALITIES[int(cands.modality[j])]) for i, j in enumerate(order)]


def search(query: str, reports: str | Path, top: int = 10, encoder=None,
           storage_options: Optional[dict] = None, method: str = "index") -> list[Hit]:
    """Find the segments of the report in ``reports`` that best match ``query``.

    ``method``: ``index`` (the report's search index, or the embedding columns when it has
    none), ``exact`` (every vector of the index scored: brute force) or ``columns`` (the
    embedding columns read and scored whole, as reports without an index are).
    """
    from vidan.index import ReportIndex
    from vidan.store import ReportStore

    if not query.strip():
        raise ValueError("empty query")
    if method not in ("index", "exact", "columns"):
        raise ValueError(f"method must be index, exact or columns, not {method!r}")
    store = ReportStore.open(reports, storage_options)
    manifest = store.latest()
    index = ReportIndex.open(store, manifest) if method != "columns" else None
    if encoder is None:
        # numpy MiniLM: the same vectors without six seconds of importing torch
        from vidan.models.text_fast import load_fast_text_encoder

        encoder = load_fast_text_encoder()
    q = encoder.encode([query])[0]
    if index is None:
        return _search_exact(q, store, manifest, top, query)
    cands = index.search(q, top, exact=method == "exact").within_reach(top, LEXICAL_WEIGHT)
    if not len(cands.row):
        return []
    return _indexed_hits(store, index, cands, top, query)


def _search_exact(q: np.ndarray, store, manifest, top: int, query: str) -> list[Hit]:
    from vidan.report import Report

    tables = {"segments": store.read_table("segments", SEARCH_COLUMNS, manifest)}
    for name, cols in (("videos", ["video_id"]), ("skipped", ["path"])):
        tables[name] = store.read_table(name, cols, manifest)
    rep = Report.from_tables(store.uri, tables, store=store, manifest=manifest, version=manifest.version, runs=[])
    return rank(q, rep.segments, top=top, query=query)
