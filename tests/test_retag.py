"""Re-tagging from stored embeddings gives the tags analysis would have given.

The oracle is ``vidan.tags.classify``, the per-segment code analysis runs; the re-tagger
is a vectorised rewrite of whole Arrow columns, so they must agree row by row.
"""

import numpy as np
import pyarrow as pa

from vidan.report import SEGMENTS_SCHEMA, to_table
from vidan.retag import retag_segments, unspoken_languages_cleared
from vidan.tags import classify


def _rows(rng, n):
    rows = []
    for i in range(n):
        kind = i % 5
        emb = rng.standard_normal(384).astype(np.float32)
        emb /= np.linalg.norm(emb)
        tags = [{"label": "old class", "score": 0.9, "source": "fused", "kind": "classification"},
                {"label": "speech", "score": 0.7, "source": "audio", "kind": "audio"},
                {"label": "kw", "score": 1.0, "source": "text", "kind": "keyword"}][: (i % 4)]
        rows.append({"video_id": f"v{i // 3}", "path": "/p", "segment_index": i % 3, "start_s": 0.0, "end_s": 1.0,
                     "embedding": None if kind == 0 else ([0.0] * 384 if kind == 1 else emb.tolist()),
                     "tags": None if i == 7 else tags, "tag_labels": None, "config_hash": "h", "run_id": "r",
                     "models": {"asr": "a", "vision": "v", "text": "t", "taxonomy": "old@1"}})
    return rows


def test_retag_matches_per_segment_classification_and_keeps_other_tags():
    rng = np.random.default_rng(3)
    rows = _rows(rng, 60)
    labels = [f"class {k}" for k in range(6)]
    # class vectors near some segments so that scores straddle the threshold
    picks = [np.asarray(rows[i]["embedding"]) for i in (2, 3, 4, 7, 8, 9)]
    class_emb = np.stack([p + 1.2 * rng.standard_normal(384) / np.sqrt(384) for p in picks]).astype(np.float32)
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    table = to_table(rows, SEGMENTS_SCHEMA)
    out = retag_segments(table, class_emb, labels, threshold=0.1, top_k=2, tag_key="k2", taxonomy_id="new@2")
    assert out.schema == SEGMENTS_SCHEMA and out.num_rows == len(rows)
    got_tags = out.column("tags").to_pylist()
    got_labels = out.column("tag_labels").to_pylist()
    n_classified = 0
    for row, tags, flat in zip(rows, got_tags, got_labels):
        emb = None if row["embedding"] is None else np.asarray(row["embedding"], np.float32)
        want = [t.as_dict() for t in classify(emb, class_emb, labels, threshold=0.1, top_k=2)]
        n_classified += bool(want)
        kept = [t for t in (row["tags"] or []) if t["kind"] != "classification"]
        if row["tags"] is None:
            assert tags is None and flat is None
            continue
        assert [t["label"] for t in tags] == [t["label"] for t in want + kept]
        assert np.allclose([t["score"] for t in tags], [t["score"] for t in want + kept], atol=1e-5)
        assert flat == [t["label"] for t in tags]
    assert n_classified >= 5  # the check above saw real classifications, not only empty ones
    assert set(out.column("tag_key").to_pylist()) == {"k2"}
    assert {m["taxonomy"] for m in out.column("models").to_pylist()} == {"new@2"}
    # everything else is untouched
    for name in ("embedding", "video_id", "segment_index"):
        assert out.column(name).equals(table.column(name))


def test_retag_drops_the_hesitations_older_runs_kept_as_keywords_and_their_language():
    # a report written before TAGGING_VERSION 2 kept "hmm" as a transcript keyword, and
    # tagged a language on a lone "Hmm."; its next run re-tags it without decoding, and
    # the rules apply there too
    def tag(label, kind, source="text"):
        return {"label": label, "score": 0.5, "source": source, "kind": kind}

    def word(text):
        return {"start_s": 0.1, "end_s": 0.4, "text": text, "probability": 0.9}

    def row(i, tags, words, kw):
        return {"video_id": "v", "path": "/p", "segment_index": i, "start_s": float(i), "end_s": i + 1.0,
                "embedding": None, "tags": tags, "tag_labels": None, "words": words, "keywords": kw,
                "config_hash": "h", "run_id": "r", "models": {"taxonomy": "old@1"}}

    rows = [
        row(0, [tag("Hmm", "keyword"), tag("rocket", "keyword"), tag("mm-hmm", "keyword"),
                tag("speech", "audio", "audio"), tag("en", "language", "audio")],
            [word(" Hmm,"), word(" the"), word(" rocket.")], ["hmm", "rocket", "mm-hmm", "coffee mug"]),
        row(1, [tag("hmm", "keyword"), tag("en", "language", "audio")], [word(" Hmm."), word(" Uh-huh...")],
            ["hmm"]),
        row(2, [tag("en", "language", "audio")], None, None),  # no words stored: nothing to say it of
        row(3, None, [word(" Hmm.")], ["hmm"]),
    ]
    out = retag_segments(to_table(rows, SEGMENTS_SCHEMA), np.zeros((2, 384), np.float32), ["a", "b"],
                         threshold=0.1, top_k=1, tag_key="k", taxonomy_id="t")
    assert out.column("tag_labels").to_pylist() == [["rocket", "speech", "en"], [], [], None]
    assert out.column("keywords").to_pylist() == [["rocket", "coffee mug"], [], None, []]


def test_a_video_where_only_hesitations_were_heard_loses_its_language_on_retag():
    from vidan.report import VIDEOS_SCHEMA

    def seg(vid, i, texts):
        return {"video_id": vid, "path": f"/{vid}", "segment_index": i, "start_s": float(i), "end_s": i + 1.0,
                "language": "en", "language_probability": 0.8, "config_hash": "h", "run_id": "r",
                "words": None if texts is None else [{"start_s": i + 0.1, "end_s": i + 0.4, "text": t,
                                                      "probability": 0.9} for t in texts]}

    segs = [seg("bunny", 0, [" Hmm."]), seg("bunny", 1, []), seg("talk", 0, []), seg("talk", 1, [" Hmm,", " hello."]),
            seg("quiet", 0, None)]
    vids = [{"video_id": v, "path": f"/{v}", "status": "ok", "language": "en" if v != "quiet" else None}
            for v in ("bunny", "talk", "quiet", "elsewhere")]
    vt, st = unspoken_languages_cleared(to_table(vids, VIDEOS_SCHEMA), to_table(segs, SEGMENTS_SCHEMA))
    assert vt.column("language").to_pylist() == [None, "en", None, "en"]  # "elsewhere": no segment here to judge
    assert st.column("language").to_pylist() == [None, None, "en", "en", None]
    assert st.column("language_probability").to_pylist()[:3] == [None, None, 0.800000011920929]
    assert vt.schema == VIDEOS_SCHEMA and st.schema == SEGMENTS_SCHEMA


def test_tag_key_changes_with_the_tagging_rules(monkeypatch):
    from vidan.config import Config
    from vidan.store import keys

    before = keys.tag_key(Config())
    monkeypatch.setattr(keys, "TAGGING_VERSION", keys.TAGGING_VERSION + 1)
    assert keys.tag_key(Config()) != before


def test_retag_of_an_empty_table_is_empty():
    empty = SEGMENTS_SCHEMA.empty_table()
    assert retag_segments(empty, np.zeros((2, 384), np.float32), ["a", "b"], threshold=0.1, top_k=1,
                          tag_key="k", taxonomy_id="t").num_rows == 0
    assert isinstance(empty, pa.Table)
