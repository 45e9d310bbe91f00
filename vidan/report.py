"""The report schema, and reading reports back.

A report folder holds three parquet datasets (each a folder of immutable part files)
and the commit records that say which part files are live (``vidan.store``):

    OUT/_vidan      marks the folder as a vidan report (vidan writes nowhere else)
    OUT/videos/     one row per input file, failures included
    OUT/segments/   one row per segment of every analysed file
    OUT/skipped/    files found in the folders that were not analysed, and why
    OUT/_commits/   one manifest per commit: the live files of all three datasets
    OUT/_runs/      one JSON record per run: counts, keys, versions, host

The schemas are explicit so that every part file has the same types whatever data it
holds (an all-null column is still a ``string``), and DuckDB or Polars read them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

EMBED_DIM = 384  # all-MiniLM-L6-v2, the shared space
AUDIO_EMBED_DIM = 64

TAG = pa.struct([
    pa.field("label", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("source", pa.string()),
    pa.field("kind", pa.string()),
])
WORD = pa.struct([
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("probability", pa.float32()),
])
CUT = pa.struct([
    pa.field("t_s", pa.float64()),
    pa.field("kind", pa.string()),  # cut | fade
    pa.field("score", pa.float32()),
])
LABEL = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
CUE = pa.struct([
    pa.field("kind", pa.string()),  # "frames" | "text" (the row's vectors) | "phrase" (a detector or sound phrase)
    pa.field("phrase", pa.string()),
    pa.field("weight", pa.float32()),
])
BOX = pa.struct([
    pa.field("kind", pa.string()),  # face | person
    pa.field("x0", pa.float32()),  # corners as fractions of the frame's width and height
    pa.field("y0", pa.float32()),
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("score", pa.float32()),  # the detector's own score
])
MODELS = pa.struct([
    pa.field("asr", pa.string()),
    pa.field("vision", pa.string()),
    pa.field("text", pa.string()),
    pa.field("taxonomy", pa.string()),
    # the detectors and the sound-event model (null where turned off). Added without a
    # new SCHEMA_VERSION: a file written before them reads them as null (unknown), and
    # re-analysing every report to fill in names would change no result.
    pa.field("faces", pa.string()),
    pa.field("people", pa.string()),
    pa.field("sound_events", pa.string()),
])


def _emb(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


# Bumped when the report's columns change; part of every analysis key.
# 5: videos.sample_aspect.
SCHEMA_VERSION = 5

PROVENANCE = [
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("analysis_key", pa.string()),  # what produced the row, taxonomy aside (vidan.store.keys)
    pa.field("tag_key", pa.string()),  # the taxonomy and thresholds its classification tags come from
    pa.field("models", MODELS),
    pa.field("run_id", pa.string(), nullable=False),
]

VIDEOS_SCHEMA = pa.schema([
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # ok | partial | failed
    pa.field("error_stage", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("notes", pa.list_(pa.string())),
    pa.field("size_bytes", pa.int64()),
    pa.field("mtime_ns", pa.int64()),  # with path, size and inode: lets a rerun trust the stored video_id
    pa.field("inode", pa.int64()),
    pa.field("etag", pa.string()),  # for inputs in object storage, in place of the inode
    pa.field("container", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("start_time_s", pa.float64()),
    pa.field("has_video", pa.bool_()),
    pa.field("has_audio", pa.bool_()),
    pa.field("n_video_streams", pa.int32()),
    pa.field("n_audio_streams", pa.int32()),
    pa.field("video_codec", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("frame_rate", pa.string()),
    pa.field("rotation", pa.int32()),
    pa.field("sample_aspect", pa.string()),  # "64/45": a coded pixel's shape; null when square
    pa.field("audio_codec", pa.string()),
    pa.field("audio_channels", pa.int32()),
    pa.field("audio_sample_rate", pa.int32()),
    pa.field("frame_backend", pa.string()),
    pa.field("frames_decoded", pa.int64()),
    pa.field("frames_sampled", pa.int64()),
    pa.field("audio_decoded_s", pa.float64()),
    pa.field("language", pa.string()),
    pa.field("n_segments", pa.int32()),
    pa.field("shot_cuts", pa.list_(CUT)),  # every shot boundary found, even where segments merged it
    pa.field("processing_s", pa.float64()),
    pa.field("config", pa.string()),  # the whole config as JSON
    *PROVENANCE,
])

SEGMENTS_SCHEMA = pa.schema([
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("segment_index", pa.int32(), nullable=False),
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("start_reason", pa.string()),  # start | shot_cut | fade | speech_pause | length_limit | window
    pa.field("keyframe_s", pa.float64()),
    pa.field("frames_sampled", pa.int32()),
    pa.field("frame_times", pa.list_(pa.float64())),  # presentation times of the frames the model saw
    pa.field("transcript", pa.string()),  # null when the file has no audio or no ASR ran
    pa.field("words", pa.list_(WORD)),
    pa.field("language", pa.string()),
    pa.field("language_probability", pa.float32()),
    pa.field("language_detected", pa.string()),  # Whisper's own guess; `language` is the final choice
    pa.field("language_detected_probability", pa.float32()),
    pa.field("no_speech_prob", pa.float32()),
    pa.field("speech_ratio", pa.float32()),
    pa.field("loudness_db", pa.float32()),
    pa.field("visual_labels", pa.list_(LABEL)),
    pa.field("n_faces", pa.int32()),  # most faces in one of the segment's frames; null: detector off
    pa.field("boxes", pa.list_(BOX)),  # people and faces in the keyframe; null: detectors off
    pa.field("tags", pa.list_(TAG)),
    pa.field("tag_labels", pa.list_(pa.string())),  # flat copy of tags.label, for easy filtering
    pa.field("keywords", pa.list_(pa.string())),
    pa.field("has_visual", pa.bool_()),
    pa.field("has_text", pa.bool_()),
    pa.field("has_audio", pa.bool_()),
    pa.field("visual_weight", pa.float32()),
    pa.field("text_weight", pa.float32()),
    pa.field("embedding", _emb(EMBED_DIM)),  # fused, L2-normalised; null when no modality was present
    pa.field("visual_embedding", _emb(EMBED_DIM)),
    pa.field("visual_confidence", pa.float32()),  # how sure the classifier was (ConSE), 0..1
    pa.field("frames_embedding", _emb(EMBED_DIM)),  # the classifier's reading alone (ConSE)
    pa.field("cues", pa.list_(CUE)),  # the evidence classification weighed: re-tagging reads it back
    pa.field("text_embedding", _emb(EMBED_DIM)),
    pa.field("audio_embedding", _emb(AUDIO_EMBED_DIM)),
    *PROVENANCE,
])

SKIPPED_SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
])

DATASETS = {"videos": VIDEOS_SCHEMA, "segments": SEGMENTS_SCHEMA, "skipped": SKIPPED_SCHEMA}


def to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table of exactly ``schema``; missing keys become nulls."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


def display_path(path: str) -> str:
    """A path as valid UTF-8 for the report.

    File names on Linux are bytes; ``os.fsdecode`` keeps undecodable bytes as
    surrogates, which Arrow cannot store. They are written as ``\\xNN`` escapes.
    """
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def load_report(out: str | Path, columns: Optional[dict[str, list[str]]] = None,
                storage_options: Optional[dict[str, str]] = None) -> "Report":
    """Read a report: ``rep.videos``, ``rep.segments``, ``rep.skipped`` (pandas), and the
    analysis methods of ``Report``.

    Only the files that the latest commit lists are read, so a run in progress (or one
    that was killed) never shows half a batch or two copies of a video. ``columns`` (per
    dataset) reads only those columns; the methods read what else they need on demand.
    """
    from vidan.store import ReportStore

    store = ReportStore.open(out, storage_options)
    m = store.latest()
    tables = {name: store.read_table(name, (columns or {}).get(name), m) for name in DATASETS}
    return Report.from_tables(out, tables, runs=store.runs(), version=m.version, store=store, manifest=m)


def files(out: str | Path, dataset: str, storage_options: Optional[dict[str, str]] = None) -> list[str]:
    """The part files of ``dataset`` that the latest commit lists: what DuckDB, Polars or
    pandas should read so that they see exactly the rows ``load_report`` sees.

    Local reports give absolute paths, object stores ``s3://bucket/prefix/...`` URIs.
    """
    from vidan.store import ReportStore

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, not {dataset!r}")
    store = ReportStore.open(out, storage_options)
    return [f"{store.storage.uri}/{key}" for key in store.latest().files(dataset)]


def read_runs(out: str | Path, storage_options: Optional[dict[str, str]] = None) -> list[dict]:
    from vidan.store import ReportStore

    return ReportStore.open(out, storage_options).runs()


# Columns with few distinct values, as pandas categoricals: a million segments hold a few
# thousand paths, and a categorical stores each once.
CATEGORICAL = {
    "videos": ("status", "error_stage", "container", "video_codec", "audio_codec", "frame_rate", "frame_backend",
               "language", "config_hash", "analysis_key", "tag_key", "run_id"),
    "segments": ("start_reason", "language", "config_hash", "analysis_key", "tag_key", "run_id"),
    "skipped": ("reason", "run_id"),
}
EMBEDDINGS = {"fused": "embedding", "visual": "visual_embedding", "text": "text_embedding", "audio": "audio_embedding"}
SEGMENT_KEY = ["video_id", "segment_index"]


class Embeddings(NamedTuple):
    matrix: np.ndarray  # (N, D) float32; rows without a vector are zeros
    present: np.ndarray  # (N,) bool: the rows that have a vector


def as_matrix(values) -> Embeddings:
    """An embedding column (Arrow array, Arrow-backed or object pandas column, or list) as
    a float32 matrix and the mask of the rows that have a vector."""
    arr = _arrow_array(values)
    present = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if isinstance(arr.type, pa.FixedSizeListType):
        dim = arr.type.list_size
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        dim = int(lengths[present][0]) if present.any() else 0
    m = np.zeros((len(arr), dim), np.float32)
    if present.any() and dim:
        flat = pc.list_flatten(arr.filter(pa.array(present)))
        m[present] = np.asarray(flat.to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    return Embeddings(m, present)


def _arrow_array(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    if isinstance(getattr(values, "dtype", None), pd.ArrowDtype):
        return pa.chunked_array(values.array._pa_array).combine_chunks()
    return pa.array([None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else list(v)
                     for v in values], pa.list_(pa.float32()))


def _types(t: pa.DataType):
    # embeddings stay in their Arrow buffers (no Python list per row); rep.embeddings() makes matrices
    return pd.ArrowDtype(t) if pa.types.is_fixed_size_list(t) else None


def _frame(table: pa.Table, dataset: str, paths: Optional[pd.CategoricalDtype]) -> pd.DataFrame:
    df = table.to_pandas(types_mapper=_types)
    for c in CATEGORICAL.get(dataset, ()):
        if c in df.columns:
            df[c] = df[c].astype("category")
    if paths is not None and "path" in df.columns and dataset != "skipped":
        df["path"] = df["path"].astype(paths)  # one set of categories: videos.path == segments.path works
    if "mtime_ns" in df.columns:
        df["modified"] = pd.to_datetime(df["mtime_ns"], unit="ns", utc=True)
    return df


class Report:
    """One commit of a report, read for analysis.

    ``videos``, ``segments`` and ``skipped`` are pandas frames (categoricals for repeated
    strings, embeddings in Arrow buffers); the methods give the views a notebook needs:
    ``embeddings``, ``tags``, ``search``, ``similar``, ``timeline``, ``thumbnails``,
    ``failures``. A method that needs a column the report was loaded without reads it
    from the same commit.
    """

    def __init__(self, out, videos, segments, skipped, runs: list[dict], version: int = 0, *,
                 store=None, manifest=None, tables: Optional[dict[str, pa.Table]] = None):
        self.out = out
        self.videos = videos
        self.segments = segments
        self.skipped = skipped
        self.runs = runs
        self.version = version  # the commit these rows come from
        self._store = store
        self._manifest = manifest
        self._tables = tables or {}
        self._encoder = None
        self._index = None  # vidan.index.ReportIndex of this commit, False when it has none
        self._search_rows = None

    @classmethod
    def from_tables(cls, out, tables: dict[str, pa.Table], **kw) -> "Report":
        seen = [tables[d].column("path").to_pylist() for d in ("videos", "segments") if "path" in tables[d].column_names]
        paths = pd.CategoricalDtype(sorted({p for ps in seen for p in ps})) if seen else None
        frames = {d: _frame(t, d, paths) for d, t in tables.items()}
        return cls(out, frames["videos"], frames["segments"], frames["skipped"], tables=tables, **kw)

    def __repr__(self) -> str:
        return (f"Report({str(self.out)!r} v{self.version}: {len(self.videos)} videos, {len(self.segments)} segments, "
                f"{len(self.skipped)} skipped)")

    # --- columns on demand ---------------------------------------------------------------

    def _columns(self, dataset: str, names: Sequence[str]) -> pa.Table:
        """``names`` of ``dataset``, row for row as loaded, read from this commit if not loaded."""
        table = self._tables.get(dataset)
        if table is not None and all(n in table.column_names for n in names):
            return table.select(list(names))
        if self._store is None:
            raise ValueError(f"this report was built without its store; it has no {dataset} columns {list(names)}")
        key = SEGMENT_KEY if dataset == "segments" else ["video_id"] if dataset == "videos" else ["path"]
        extra = [k for k in key if k not in names]
        fresh = self._store.read_table(dataset, [*names, *extra], self._manifest)
        if table is not None and table.num_rows and all(k in table.column_names for k in key):
            # align by key, not by trust in the order the files are read in
            want = pa.table({k: table.column(k) for k in key}).append_column("_row", pa.array(np.arange(table.num_rows)))
            got = pa.table({k: fresh.column(k) for k in key}).append_column("_at", pa.array(np.arange(fresh.num_rows)))
            order = want.join(got, key, join_type="left outer").sort_by("_row").column("_at")
            if order.null_count:
                raise ValueError(f"{dataset} rows of commit {self.version} are no longer readable as loaded")
            fresh = fresh.take(order)
        return fresh.select(list(names))

    def _segment_frame(self, names: Sequence[str]) -> pd.DataFrame:
        if all(n in self.segments.columns for n in names):
            return self.segments[list(names)]
        return _frame(self._columns("segments", names), "segments", self._path_dtype())

    def _path_dtype(self) -> Optional[pd.CategoricalDtype]:
        for df in (self.segments, self.videos):
            if "path" in df.columns and isinstance(df["path"].dtype, pd.CategoricalDtype):
                return df["path"].dtype
        return None

    # --- views ---------------------------------------------------------------------------

    def embeddings(self, kind: str = "fused") -> Embeddings:
        """``(matrix, present)``: the segments' ``kind`` embeddings (fused, visual, text or
        audio) as a float32 (N, D) matrix in the order of ``rep.segments``, zeros where
        ``present`` is False (the modality was missing)."""
        if kind not in EMBEDDINGS:
            raise ValueError(f"kind must be one of {sorted(EMBEDDINGS)}, not {kind!r}")
        col = EMBEDDINGS[kind]
        if col in self.segments.columns:
            return as_matrix(self.segments[col])
        return as_matrix(self._columns("segments", [col]).column(col))

    def tags(self, kind: Optional[str] = None) -> pd.DataFrame:
        """Every tag of every segment, one row each: ``video_id``, ``path``, ``segment_index``,
        ``start_s``, ``end_s``, ``label``, ``score``, ``source``, ``kind`` (only ``kind`` if given)."""
        t = self._columns("segments", ["video_id", "path", "segment_index", "start_s", "end_s", "tags"])
        lists = t.column("tags").combine_chunks()
        rows = t.drop_columns(["tags"]).take(pc.list_parent_indices(lists))
        flat = pc.list_flatten(lists)
        for f in TAG:
            rows = rows.append_column(f.name, flat.field(f.name))
        if kind is not None:
            rows = rows.filter(pc.equal(rows.column("kind"), kind))
        df = _frame(rows, "tags", self._path_dtype())
        for c in ("label", "source", "kind"):
            df[c] = df[c].astype("category")
        return df

    def failures(self) -> pd.DataFrame:
        """The files that were not fully analysed (``failed`` or ``partial``), with the stage,
        the cause in one line, the whole message and what was lost."""
        v = _frame(self._columns("videos", ["path", "status", "error_stage", "error_message", "notes"]), "videos",
                   self._path_dtype())
        v = v[v["status"] != "ok"].copy()
        first_note = v["notes"].map(lambda n: n[0] if n is not None and len(n) else None)
        cause = v["error_message"].map(lambda m: m.strip().splitlines()[0] if isinstance(m, str) and m.strip() else None)
        v.insert(3, "cause", cause.where(cause.notna(), first_note))
        return v.reset_index(drop=True)

    def timeline(self, video_id: str) -> pd.DataFrame:
        """What happens over time in one video, one row per event, by start time: ``what``
        (``segment``, ``tag`` or ``word``), ``start_s``, ``end_s``, ``kind`` (the segment's
        start reason, or the tag's kind), ``label`` (the tag, or the word), ``score`` (the
        tag's, or the word's probability), ``segment_index``."""
        t = self._columns("segments", ["video_id", "segment_index", "start_s", "end_s", "start_reason", "tags", "words"])
        t = t.filter(pc.equal(t.column("video_id"), video_id))
        if not t.num_rows and not (self.videos.get("video_id", pd.Series(dtype=str)) == video_id).any():
            raise KeyError(f"no video {video_id!r} in this report")
        events = []
        for r in t.to_pylist():
            i, a, b = r["segment_index"], r["start_s"], r["end_s"]
            events.append(("segment", a, b, r["start_reason"], None, np.nan, i))
            events += [("tag", a, b, x["kind"], x["label"], x["score"], i) for x in r["tags"] or ()]
            events += [("word", w["start_s"], w["end_s"], None, w["text"].strip(), w["probability"], i)
                       for w in r["words"] or ()]
        df = pd.DataFrame(events, columns=["what", "start_s", "end_s", "kind", "label", "score", "segment_index"])
        df["what"] = pd.Categorical(df["what"], categories=["segment", "tag", "word"])
        return df.sort_values(["start_s", "what"], kind="stable").reset_index(drop=True)

    def search(self, query: str, k: int = 10, within=None) -> pd.DataFrame:
        """The ``k`` segments that best match ``query`` (as ``vidan search`` ranks them),
        best first; ``within`` restricts to one video_id or a list of them. Columns:
        ``rank``, ``path``, ``video_id``, ``segment_index``, ``start_s``, ``end_s``,
        ``score``, ``modality``, ``transcript``, ``tags``."""
        from vidan.search import SEARCH_COLUMNS, rank

        if not query.strip():
            raise ValueError("empty query")
        ids = None if within is None else [within] if isinstance(within, str) else list(within)
        q = self._encode(query)
        hits = self._search_index(q, k, ids, query)
        if hits is None:  # a report without an index (or rows not as the index has them)
            seg = self._segment_frame(SEARCH_COLUMNS)
            if ids is not None:
                seg = seg[seg["video_id"].isin(ids)]
            hits = rank(q, seg, top=k, query=query)
        return _hits_frame([h.as_dict() for h in hits], self._path_dtype())

    def _search_index(self, q: np.ndarray, k: int, ids, query: str):
        from vidan.index import ReportIndex
        from vidan.search import LEXICAL_WEIGHT, META_COLUMNS, rank_candidates

        if self._store is None or self._manifest is None:
            return None
        if self._index is None:
            self._index = ReportIndex.open(self._store, self._manifest) or False
        if self._index is False:
            return None
        index = self._index
        if self._search_rows is None:  # read once: a warm query touches no parquet
            self._search_rows = _one_chunk(self._segment_frame(META_COLUMNS).reset_index(drop=True))
        rows = self._search_rows
        if int(index.offsets[-1]) != len(rows):
            return None  # this Report's rows are not the commit's (built by hand, filtered)
        cands = index.search(q, k, rows=None if ids is None else index.rows_of(ids)).within_reach(k, LEXICAL_WEIGHT)
        if not len(cands.row):
            return []
        at = index.offsets[cands.group] + cands.row
        picked = rows.iloc[at]
        # the index names each row's segment: a frame in another order is read the slow way
        if not ((picked["segment_index"].to_numpy() == index.segment_index(cands.group, cands.row)).all()
                and list(picked["video_id"].astype(str)) == index.video_id(cands.group, cands.row)):
            return None
        return rank_candidates(cands, picked, top=k, query=query)

    def similar(self, video_id: str, segment_index: int, k: int = 10) -> pd.DataFrame:
        """More like this moment: the ``k`` segments whose fused embeddings are nearest to
        that of (``video_id``, ``segment_index``), itself excluded; columns as ``search``."""
        keys = self._segment_frame(SEGMENT_KEY)
        at = np.flatnonzero((keys["video_id"] == video_id).to_numpy() & (keys["segment_index"] == segment_index).to_numpy())
        if not len(at):
            raise KeyError(f"no segment {segment_index} of video {video_id!r} in this report")
        m, present = self.embeddings("fused")
        if not present[at[0]]:
            raise ValueError(f"segment {segment_index} of video {video_id!r} has no fused embedding")
        scores = m @ m[at[0]]
        scores[~present] = -np.inf
        scores[at[0]] = -np.inf
        order = [i for i in np.argsort(-scores, kind="stable")[:k] if np.isfinite(scores[i])]
        rows = self._segment_frame(["path", "video_id", "segment_index", "start_s", "end_s", "transcript",
                                    "tag_labels"]).iloc[order]
        hits = [{**r, "score": float(scores[i]), "modality": "fused", "tags": [] if r["tag_labels"] is None else list(r["tag_labels"])}
                for i, r in zip(order, rows.to_dict("records"))]
        return _hits_frame(hits, self._path_dtype())

    def thumbnails(self, rows: pd.DataFrame, width: int = 240):
        """Frames of ``rows`` (any frame with ``video_id`` and ``segment_index``: hits,
        segments, tags) at each segment's keyframe time, read from the source videos with
        PyAV and kept in a cache outside the report. In Jupyter the result shows as a grid;
        ``.images`` are the RGB arrays (None where the file could not be read)."""
        from vidan.thumbnails import Thumbnails, keyframe_time

        if not {"video_id", "segment_index"} <= set(rows.columns):
            raise ValueError("rows need video_id and segment_index columns")
        seg = self._segment_frame([*SEGMENT_KEY, "path", "start_s", "end_s", "keyframe_s"])
        seg = seg.assign(video_id=seg["video_id"].astype(str), path=seg["path"].astype(str))
        vid = _frame(self._columns("videos", ["video_id", "start_time_s", "rotation"]), "videos", None)
        want = rows[SEGMENT_KEY].astype({"video_id": str}).reset_index(drop=True)
        info = want.merge(seg, on=SEGMENT_KEY, how="left").merge(vid, on="video_id", how="left")
        if info["path"].isna().any():
            raise KeyError("some rows name segments that are not in this report")
        items = [(r.video_id, r.path, keyframe_time(r.keyframe_s, r.start_s, r.end_s), r.start_time_s, r.rotation,
                  f"{r.path.rsplit('/', 1)[-1]} {clock(r.start_s)}–{clock(r.end_s)}") for r in info.itertuples()]
        return Thumbnails.grab(items, width=width)

    def _encode(self, query: str) -> np.ndarray:
        if self._encoder is None:  # loaded once per Report: a warm query costs no model load
            from vidan.models.text_fast import load_fast_text_encoder

            self._encoder = load_fast_text_encoder()
        return self._encoder.encode([query])[0]


def clock(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour), for people reading times in a table."""
    s = int(max(0.0, float(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def _hits_frame(hits: list[dict], paths: Optional[pd.CategoricalDtype]) -> pd.DataFrame:
    cols = ["rank", "path", "video_id", "segment_index", "start_s", "end_s", "score", "modality", "transcript", "tags"]
    df = pd.DataFrame([{**h, "rank": i + 1} for i, h in enumerate(hits)], columns=cols)
    if paths is not None:
        df["path"] = df["path"].astype(paths)
    return df.astype({"rank": "int64", "segment_index": "int64", "score": "float64"})


def _one_chunk(df: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed columns joined into one chunk each. A report's columns come in one
    chunk per row group (246 at a million segments), and taking a query's few hundred
    rows from that many chunks cost 6-9 ms a string column, from one chunk 0.1 ms."""
    for c in df.columns:
        arr = df[c].array
        if hasattr(arr, "__arrow_array__"):
            chunked = arr.__arrow_array__()
            if getattr(chunked, "num_chunks", 1) > 1:
                df[c] = pd.Series(pd.array(chunked.combine_chunks(), dtype=df[c].dtype), index=df.index)
    return df
