"""Classification tags recomputed from the embeddings a report already stores.

No video is opened and no image or speech model runs: each segment's fused embedding is
scored against the taxonomy's class embeddings, as ``vidan.tags.classify`` does during
analysis, and the ``tags`` and ``tag_labels`` columns are rebuilt. Tags the current
tagging rules no longer give (``TAGGING_VERSION``) are dropped from them and from
``keywords`` on the way. Works on whole Arrow tables with numpy, so 100,000 segments
take seconds.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidan.report import EMBED_DIM, TAG
from vidan.tags import FILLER_PATTERN, FILLER_TRIM, FRAMES_CUE, PHRASE_CUE, TEXT_CUE, CueTable, classify_many

log = logging.getLogger("vidan")
READ_AHEAD_BYTES = 1 << 30  # on-disk bytes of groups read while the taxonomy is embedded


def _embeddings(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    # a fixed-size list keeps a slot for every row, null or not: the reshape is exact
    values = arr.values.slice(arr.offset * EMBED_DIM, len(arr) * EMBED_DIM)
    emb = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(arr), EMBED_DIM)
    if not present.all():
        emb = emb.copy() if not emb.flags.writeable else emb
        emb[~present] = 0.0  # a null row's slots hold nothing meaningful
    present &= np.einsum("ij,ij->i", emb, emb) > 0  # an all-zero vector has no direction
    return emb, present


def stored_cues(segments: pa.Table) -> CueTable:
    """The evidence each row stored (``cues``, ``frames_embedding``, ``text_embedding``),
    as a ``CueTable``, without a Python loop per row."""
    n = segments.num_rows
    frames, _ = _embeddings(segments.column("frames_embedding"))
    text, _ = _embeddings(segments.column("text_embedding"))
    cues = segments.column("cues").combine_chunks()
    off = np.asarray(cues.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    vals = cues.values.slice(int(off[0]), int(off[-1] - off[0]))
    row = np.repeat(np.arange(n), np.diff(off))
    kind = np.asarray(vals.field("kind").to_numpy(zero_copy_only=False), dtype=object)
    weight = np.asarray(vals.field("weight").fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
    frames_w = np.bincount(row[kind == FRAMES_CUE], weights=weight[kind == FRAMES_CUE], minlength=n)
    text_w = np.bincount(row[kind == TEXT_CUE], weights=weight[kind == TEXT_CUE], minlength=n)
    is_phrase = kind == PHRASE_CUE
    names = np.asarray(vals.field("phrase").to_numpy(zero_copy_only=False), dtype=object)[is_phrase]
    phrases, col = np.unique(names.astype(str), return_inverse=True) if len(names) else (np.array([]), np.array([]))
    phrase_w = np.zeros((n, len(phrases)), np.float32)
    np.add.at(phrase_w, (row[is_phrase], col), weight[is_phrase])
    return CueTable(frames, frames_w.astype(np.float32), text, text_w.astype(np.float32), list(phrases), phrase_w)


def retag_segments(segments: pa.Table, class_emb: np.ndarray, labels: Sequence[str], *, threshold: float,
                   top_k: int, tag_key: str, taxonomy_id: str, evidence=None,
                   said: Optional[np.ndarray] = None) -> pa.Table:
    """``segments`` with classification tags from ``class_emb``, first, as during analysis;
    the other tags kept in their order. Vectorised over Arrow buffers: no Python loop per row.

    ``evidence(phrases) -> (phrase embeddings, visual baseline)``: what scoring the stored
    cues needs beside the class embeddings (``Evidence``). Rows written before cues were
    stored are scored by their fused embedding, as analysis did then. ``said``:
    ``said_per_segment(segments)`` when the caller has it already.
    """
    n = segments.num_rows
    if n == 0:
        return segments
    if evidence is not None and "cues" in segments.column_names and segments.column("cues").null_count < n:
        table = stored_cues(segments)
        phrase_emb, baseline = evidence(table.phrases, class_emb)
        top, top_scores, chosen = classify_many(table, phrase_emb, class_emb, baseline, threshold=threshold,
                                                top_k=top_k)
    else:
        emb, present = _embeddings(segments.column("embedding"))
        scores = emb @ class_emb.T.astype(np.float32)
        k = min(top_k, scores.shape[1])
        top = np.argsort(-scores, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        chosen = (top_scores >= threshold) & present[:, None]  # best first, so a prefix of each row
    n_new = chosen.sum(axis=1)
    n_new = chosen.sum(axis=1)
    new_vals = pa.StructArray.from_arrays(
        [pa.array(np.asarray(labels, dtype=object)[top[chosen]], pa.string()),
         pa.array(top_scores[chosen], pa.float32()),
         pa.array(np.full(int(n_new.sum()), "fused", dtype=object), pa.string()),
         pa.array(np.full(int(n_new.sum()), "classification", dtype=object), pa.string())],
        fields=list(TAG))

    old = segments.column("tags").combine_chunks()
    old_off = np.asarray(old.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    old_vals = old.values.slice(int(old_off[0]), int(old_off[-1] - old_off[0]))
    old_off = old_off - old_off[0]
    if len(old_vals):
        keep = np.asarray(pc.not_equal(old_vals.field("kind"), "classification").fill_null(True)
                          .to_numpy(zero_copy_only=False), dtype=bool)
        keep &= ~_not_given_now(old_vals, np.repeat(np.arange(n), np.diff(old_off)), segments, said)
    else:
        keep = np.zeros(0, bool)
    kept_per_row = np.add.reduceat(np.append(keep, False).astype(np.int64), old_off[:-1]) * (np.diff(old_off) > 0)
    kept_vals = old_vals.filter(pa.array(keep)) if len(old_vals) else old_vals

    # row i: its new classification tags, then its kept old tags
    combined = pa.concat_arrays([new_vals, kept_vals.cast(new_vals.type)])
    total = n_new + kept_per_row
    out_off = np.concatenate([[0], np.cumsum(total)])
    new_start = np.concatenate([[0], np.cumsum(n_new)])[:-1]
    kept_start = len(new_vals) + np.concatenate([[0], np.cumsum(kept_per_row)])[:-1]
    pos = np.arange(int(out_off[-1])) - np.repeat(out_off[:-1], total)  # index within its row
    row = np.repeat(np.arange(n), total)
    idx = np.where(pos < n_new[row], new_start[row] + pos, kept_start[row] + pos - n_new[row])
    values = combined.take(pa.array(idx, pa.int64()))
    offsets = pa.array(out_off.astype(np.int32))
    mask = old.is_null()
    tags = pa.ListArray.from_arrays(offsets, values, type=pa.list_(TAG), mask=mask)
    tag_labels = pa.ListArray.from_arrays(offsets, values.field("label"), type=pa.list_(pa.string()), mask=mask)
    t = segments.set_column(segments.schema.get_field_index("tags"), "tags", tags)
    t = t.set_column(t.schema.get_field_index("tag_labels"), "tag_labels", tag_labels)
    if "keywords" in t.column_names:
        t = t.set_column(t.schema.get_field_index("keywords"), "keywords", _without_fillers(t.column("keywords")))
    return _provenance(t, tag_key, taxonomy_id)


def _bools(a) -> np.ndarray:
    return np.asarray(a.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _filler(text) -> np.ndarray:
    """Which of the strings ``text`` are hesitations or punctuation alone (``is_filler``)."""
    t = pc.utf8_trim(pc.utf8_lower(text), characters=FILLER_TRIM)
    return _bools(pc.equal(t, "")) | _bools(pc.match_substring_regex(t, f"^(?:{FILLER_PATTERN})$"))


def said_per_segment(segments: pa.Table) -> Optional[np.ndarray]:
    """Which segments heard a word other than a hesitation (None: no words stored)."""
    if "words" not in segments.column_names:
        return None
    words = segments.column("words").combine_chunks()
    heard = np.asarray(pc.list_parent_indices(words))[~_filler(pc.list_flatten(words).field("text"))]
    return np.bincount(heard, minlength=segments.num_rows) > 0


def _not_given_now(vals: pa.StructArray, row: np.ndarray, segments: pa.Table,
                   said: Optional[np.ndarray]) -> np.ndarray:
    """Which stored tags (``vals``, of rows ``row``) the current rules no longer give
    (TAGGING_VERSION 2): a hesitation as a transcript keyword, and a language tag of a
    segment where only hesitations were heard (``said``: ``said_per_segment``, worked
    out here when not given and needed)."""
    kind = vals.field("kind")
    spoken = _bools(pc.and_(pc.equal(kind, "keyword"), pc.equal(vals.field("source"), "text")))
    out = spoken & _filler(vals.field("label"))
    language = _bools(pc.equal(kind, "language"))
    if language.any():
        said = said_per_segment(segments) if said is None else said
        if said is not None:
            out |= language & ~said[row]
    return out


def _without_fillers(col: pa.ChunkedArray) -> pa.Array:
    """A list-of-strings column (``keywords``) without its hesitations."""
    lists = col.combine_chunks()
    values = pc.list_flatten(lists)
    keep = ~_filler(values) if len(values) else np.zeros(0, bool)
    counts = np.bincount(np.asarray(pc.list_parent_indices(lists))[keep], minlength=len(lists))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values.filter(pa.array(keep)), type=lists.type, mask=lists.is_null())


def unspoken_languages_cleared(videos: pa.Table, segments: pa.Table,
                               said: Optional[np.ndarray] = None) -> tuple[pa.Table, pa.Table]:
    """``videos`` and ``segments`` (one group's) with ``language`` and its probability
    cleared for the videos in which only hesitations were heard: what analysis gives
    since TAGGING_VERSION 2 (``VideoParts.language``). ``said``: ``said_per_segment``
    of ``segments``, when already worked out."""
    said = said_per_segment(segments) if said is None else said
    if not segments.num_rows or said is None:
        return videos, segments
    ids = segments.column("video_id").combine_chunks()
    spoken = pa.array(sorted(set(ids.filter(pa.array(said)).to_pylist())), pa.string())
    segmented = pa.array(sorted(set(ids.to_pylist())), pa.string())

    def clear(t: pa.Table) -> pa.Table:
        vid = t.column("video_id").combine_chunks()
        # a video none of whose segments is here is left as it is
        keep = pc.or_(pc.is_in(vid, value_set=spoken), pc.invert(pc.is_in(vid, value_set=segmented)))
        for name in ("language", "language_probability"):
            if name in t.column_names:
                col = t.column(name).combine_chunks()
                t = t.set_column(t.schema.get_field_index(name), name,
                                 pc.if_else(keep, col, pa.scalar(None, col.type)))
        return t

    return clear(videos) if videos.num_rows else videos, clear(segments)


def _provenance(t: pa.Table, tag_key: str, taxonomy_id: str) -> pa.Table:
    n = t.num_rows
    t = t.set_column(t.schema.get_field_index("tag_key"), "tag_key", pa.array([tag_key] * n, pa.string()))
    models = t.column("models").combine_chunks()
    if len(models):
        fields = {f.name: models.field(f.name) for f in models.type}
        fields["taxonomy"] = pa.array([taxonomy_id] * n, pa.string())
        rebuilt = pa.StructArray.from_arrays(list(fields.values()), names=list(fields),
                                             mask=pc.is_null(models))
        t = t.set_column(t.schema.get_field_index("models"), "models", rebuilt)
    return t


class Evidence:
    """Embeddings of the detector and sound phrases, and the classes' baseline over the
    image labels: computed once per run with the numpy MiniLM, cached on disk."""

    def __init__(self):
        self._phrases: dict[str, np.ndarray] = {}
        self._label_mean: Optional[np.ndarray] = None
        self._encoder = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from vidan.models.text_fast import load_fast_text_encoder

            self._encoder = load_fast_text_encoder()
        return self._encoder.encode(texts)

    def __call__(self, phrases: Sequence[str], class_emb: np.ndarray):
        todo = [p for p in phrases if p not in self._phrases]
        if todo:
            self._phrases.update(zip(todo, self._encode(list(todo))))
        if self._label_mean is None:
            from vidan.labels import label_bank
            from vidan.models.vision import imagenet_labels

            # the mean over the labels' cosines is the cosine with the labels' mean vector
            self._label_mean = label_bank(_LazyEncoder(self), imagenet_labels()).mean(axis=0)
        emb = (np.stack([self._phrases[p] for p in phrases]) if len(phrases)
               else np.zeros((0, class_emb.shape[1]), np.float32))
        return emb, np.asarray(class_emb, np.float32) @ self._label_mean.astype(np.float32)


class _LazyEncoder:
    """What ``label_bank`` asks of an encoder; the model loads only on a cache miss."""

    def __init__(self, owner: Evidence):
        from vidan.models.text import DIST, MODEL_NAME

        import importlib.metadata

        self.owner = owner
        self.model_id = f"{MODEL_NAME}@{DIST}=={importlib.metadata.version(DIST)}"
        self.dim = EMBED_DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.owner._encode(texts)


def retag_videos(videos: pa.Table, tag_key: str, taxonomy_id: str) -> pa.Table:
    return _provenance(videos, tag_key, taxonomy_id) if videos.num_rows else videos


class _Locked:
    """Two groups are re-tagged at once: one of them embeds, the other waits."""

    def __init__(self, fn):
        import threading

        self.fn, self.lock = fn, threading.Lock()

    def __call__(self, *args):
        with self.lock:
            return self.fn(*args)


def _cache_name(taxonomy) -> str:
    import hashlib
    import importlib.metadata

    from vidan.models.text import DIST, MODEL_NAME

    model_id = f"{MODEL_NAME}@{DIST}=={importlib.metadata.version(DIST)}"
    blob = model_id + "\0" + "\0".join(f"{c.label}\1" + "\1".join(c.prompts) for c in taxonomy.classes)
    return f"taxonomy-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npy"


def cached_taxonomy_embeddings(taxonomy) -> Optional[np.ndarray]:
    from vidan.models.cache import load_array

    return load_array(_cache_name(taxonomy), len(taxonomy.classes))


def taxonomy_embeddings(taxonomy, device: str = "cpu", encoder=None) -> np.ndarray:
    """(K, D) class embeddings of ``taxonomy``, cached on disk by prompts and text model:
    re-tagging with a taxonomy seen before loads no model at all. ``encoder``: the
    bundled MiniLM already loaded (the finishing stage's), else it is loaded here."""
    emb = cached_taxonomy_embeddings(taxonomy)
    if emb is not None:
        return emb
    from vidan.models.cache import save_array
    from vidan.models.text_fast import load_fast_text_encoder
    from vidan.tags import class_embeddings

    # a taxonomy is a few hundred short prompts: the numpy MiniLM embeds them in about the
    # time sentence-transformers takes to import, and gives the same vectors (same model_id)
    emb = class_embeddings(taxonomy, (encoder or load_fast_text_encoder()).encode)
    save_array(_cache_name(taxonomy), emb)
    return emb


def _embed_elsewhere(taxonomy_path: Optional[str], taxonomy, device: str) -> np.ndarray:
    """The class embeddings, computed on a thread beside the parquet reads when not cached.

    This used to be a child process: importing sentence-transformers is seconds of
    pure-Python work that held the GIL against the threads reading parquet. The numpy
    MiniLM imports nothing heavy and spends its time in BLAS and the Rust tokenizer,
    which release the GIL.
    """
    return taxonomy_embeddings(taxonomy, device)


def retag_report(store, config, tag_key: str, *, committer=None, device: str = "cpu", run_id: str = "retag") -> int:
    """Re-tag every group whose rows carry another ``tag_key``, in one commit.

    Returns how many videos were re-tagged. No video is opened; only the text model may
    load (to embed a taxonomy not seen before), while the first groups are read. Groups
    are read, re-tagged and written two at a time: Arrow releases the GIL for I/O.
    """
    from concurrent.futures import ThreadPoolExecutor

    from vidan.report import DATASETS
    from vidan.tags import load_taxonomy

    tax = load_taxonomy(config.tags.taxonomy)
    tag = committer.run_id if committer is not None else run_id

    def stale(g) -> int:
        keys = store._read_files([g.videos], DATASETS["videos"], ["tag_key"]).column("tag_key").to_pylist()
        return sum(1 for k in keys if k != tag_key)

    counts = {g.id: stale(g) for g in store.latest().groups}
    if not any(counts.values()):
        return 0
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidan-retag")
    waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidan-taxonomy")
    class_emb = waiter.submit(_embed_elsewhere, config.tags.taxonomy, tax, device)
    evidence = _Locked(Evidence())

    def read(g):
        vt = store._read_files([g.videos], DATASETS["videos"])
        st = (store._read_files([g.segments], DATASETS["segments"]) if g.segments
              else DATASETS["segments"].empty_table())
        return vt, st

    # while the taxonomy is embedded, read ahead (as far as memory comfortably allows)
    reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidan-read")
    ahead, budget = {}, READ_AHEAD_BYTES
    for g in store.latest().groups:
        if counts.get(g.id) and g.bytes <= budget:
            ahead[g.id] = reader.submit(read, g)
            budget -= g.bytes

    def redo(g):
        vt, st = ahead.pop(g.id).result() if g.id in ahead else read(g)
        said = said_per_segment(st)  # once for both: the words of every segment, matched
        st = retag_segments(st, class_emb.result(), tax.labels, threshold=config.tags.threshold,
                            top_k=config.tags.top_k, tag_key=tag_key, taxonomy_id=tax.id, evidence=evidence,
                            said=said)
        vt, st = unspoken_languages_cleared(vt, st, said)
        # tags are all that changed: the rows, their order and embeddings are the sidecar's
        return store.write_group(retag_videos(vt, tag_key, tax.id), st, tag, index=g.index)

    jobs = {gid: pool.submit(redo, g) for g in store.latest().groups if (gid := g.id) and counts[gid]}

    def rewrite(g):
        if g.id in jobs:
            return jobs[g.id].result()
        n = counts.get(g.id)
        if n is None:  # a group another writer added meanwhile
            n = counts[g.id] = stale(g)
            if n:
                jobs[g.id] = pool.submit(redo, g)
                return jobs[g.id].result()
        return g

    try:
        if committer is not None:
            committer.flush(rewrite=rewrite, change={"retagged": 1})
        else:
            store.commit(rewrite=rewrite, tag=tag,
                         meta={"run_id": run_id, "tag_key": tag_key, "change": {"retagged": 1}})
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        reader.shutdown(wait=True, cancel_futures=True)
        waiter.shutdown(wait=True)
    return sum(counts[g] for g in jobs)


if __name__ == "__main__":  # python -m vidan.retag TAXONOMY DEVICE: fill the embeddings cache
    import sys

    from vidan.tags import load_taxonomy

    taxonomy_embeddings(load_taxonomy(sys.argv[1] or None), sys.argv[2] if len(sys.argv) > 2 else "cpu")
