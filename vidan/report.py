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

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa

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
MODELS = pa.struct([
    pa.field("asr", pa.string()),
    pa.field("vision", pa.string()),
    pa.field("text", pa.string()),
    pa.field("taxonomy", pa.string()),
])


def _emb(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


# Bumped when the report's columns change; part of every analysis key.
SCHEMA_VERSION = 2

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
    pa.field("no_speech_prob", pa.float32()),
    pa.field("speech_ratio", pa.float32()),
    pa.field("loudness_db", pa.float32()),
    pa.field("visual_labels", pa.list_(LABEL)),
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
    """Read a report into pandas frames: ``rep.videos``, ``rep.segments``, ``rep.skipped``.

    Only the files that the latest commit lists are read, so a run in progress (or one
    that was killed) never shows half a batch or two copies of a video.
    """
    from vidan.store import ReportStore

    store = ReportStore.open(out, storage_options)
    m = store.latest()
    frames = {name: store.read_table(name, (columns or {}).get(name), m).to_pandas() for name in DATASETS}
    return Report(out=out, runs=store.runs(), version=m.version, **frames)


def read_runs(out: str | Path, storage_options: Optional[dict[str, str]] = None) -> list[dict]:
    from vidan.store import ReportStore

    return ReportStore.open(out, storage_options).runs()


class Report:
    def __init__(self, out, videos, segments, skipped, runs: list[dict], version: int = 0):
        self.out = out
        self.videos = videos
        self.segments = segments
        self.skipped = skipped
        self.runs = runs
        self.version = version  # the commit these rows come from

    def __repr__(self) -> str:
        return (f"Report({str(self.out)!r} v{self.version}: {len(self.videos)} videos, {len(self.segments)} segments, "
                f"{len(self.skipped)} skipped)")
