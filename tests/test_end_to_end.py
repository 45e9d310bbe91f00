"""The whole pipeline on a real local Ray with the real bundled models.

One folder of generated videos is analysed once for the module; each test checks one
promise the README makes about the report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import vidan
from vidan import synth
from vidan.search import search
from vidan.synth import Scene
from vidan.wer import word_error_rate

pytestmark = pytest.mark.ray

SCENES = [(0.0, 8.0), (8.0, 15.0), (15.0, 23.0)]  # rocket | cut | coffee table, fade | green field


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    (d / "sub").mkdir()
    a = synth.concat_audio(d / "coffee.wav", [(1.0, synth.speech_clip("coffee"))])
    synth.write_video(d / "coffee.mp4", [Scene(8.0, synth.photo("coffee"))], audio=a)
    a = synth.concat_audio(d / "cat.wav", [(0.5, synth.speech_clip("cat"))])
    synth.write_video(d / "sub" / "cat nap.mkv", [Scene(7.0, synth.photo("chelsea"))], audio=a)
    a = synth.concat_audio(d / "scenes.wav", [(0.5, synth.speech_clip("rocket")), (8.5, synth.speech_clip("bread")),
                                              (16.5, synth.speech_clip("football"))])
    synth.write_video(d / "scenes.mp4", [Scene(8.0, synth.photo("rocket")),
                                         Scene(7.0, synth.photo("coffee"), fade_out_s=1.0),
                                         Scene(8.0, (40, 140, 60), fade_in_s=1.0)], audio=a)
    synth.write_video(d / "silent.mp4", [Scene(5.0, synth.photo("astronaut"))])
    for wav in d.glob("*.wav"):
        wav.unlink()
    (d / "notes.mp4").write_text("this is not a video\n")
    return d


@pytest.fixture(scope="module")
def report(folder, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("report")
    summary = vidan.analyze([folder], out=out)
    return summary, vidan.load_report(out)


def _video(rep, name):
    rows = rep.videos[rep.videos.path.str.endswith(name)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _segments(rep, name):
    vid = _video(rep, name).video_id
    return rep.segments[rep.segments.video_id == vid].sort_values("segment_index")


def _segment_at(rep, name, t):
    segs = _segments(rep, name)
    row = segs[(segs.start_s <= t) & (t < segs.end_s)]
    assert len(row) == 1, segs[["start_s", "end_s"]]
    return row.iloc[0]


def test_every_file_gets_exactly_one_row(report, folder):
    summary, rep = report
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    assert sorted(rep.videos.path) == files
    assert rep.videos.video_id.is_unique
    assert summary.files == 5 and summary.ok == 4 and summary.failed == 1
    assert summary.exit_code == 1


def test_good_files_ok_and_bad_file_failed_with_cause(report):
    _, rep = report
    for name in ("coffee.mp4", "cat nap.mkv", "scenes.mp4", "silent.mp4"):
        row = _video(rep, name)
        assert row.status == "ok", (name, row.error_stage, row.error_message, row.notes)
        assert row.n_segments > 0
    bad = _video(rep, "notes.mp4")
    assert bad.status == "failed"
    assert bad.error_stage == "probe"
    assert bad.error_message and "see stderr" not in bad.error_message
    assert (rep.segments.video_id == bad.video_id).sum() == 0


def test_segments_tile_each_video(report):
    _, rep = report
    for row in rep.videos[rep.videos.status == "ok"].itertuples():
        segs = rep.segments[rep.segments.video_id == row.video_id].sort_values("segment_index")
        assert list(segs.segment_index) == list(range(len(segs)))
        assert segs.start_s.iloc[0] == 0.0
        assert segs.end_s.iloc[-1] == pytest.approx(row.duration_s, abs=1e-6)
        assert np.allclose(segs.start_s.iloc[1:].to_numpy(), segs.end_s.iloc[:-1].to_numpy())
        assert (segs.end_s > segs.start_s).all()


def test_clear_speech_is_transcribed(report):
    _, rep = report
    segs = _segments(rep, "coffee.mp4")
    said = " ".join(t for t in segs.transcript if t)
    assert word_error_rate(synth.speech_text("coffee"), said) <= 0.2, said
    assert set(segs.language.dropna()) == {"en"}
    words = [w for ws in segs.words if ws is not None for w in ws]
    # speech starts at 1.0 s; Whisper word times are good to a few hundred ms
    assert words and all(0.5 <= w["start_s"] <= w["end_s"] <= 8.0 for w in words)
    assert [w["start_s"] for w in words] == sorted(w["start_s"] for w in words)


def test_no_audio_means_null_transcript_and_audio_features(report):
    _, rep = report
    row = _video(rep, "silent.mp4")
    assert not row.has_audio
    segs = _segments(rep, "silent.mp4")
    assert segs.transcript.isna().all()
    assert segs.speech_ratio.isna().all() and segs.loudness_db.isna().all()
    assert segs.audio_embedding.isna().all() and segs.text_embedding.isna().all()
    assert segs.has_visual.all() and not segs.has_text.any()
    assert (segs.visual_weight == 1.0).all()


def test_rows_carry_provenance_and_embeddings(report):
    _, rep = report
    seg = rep.segments
    assert seg.config_hash.nunique() == 1 and seg.config_hash.iloc[0] == vidan.Config().hash()
    models = seg.models.iloc[0]
    assert "whisper" in models["asr"] and "efficientnet" in models["vision"] and "MiniLM" in models["text"]
    # the models behind the people, face and sound tags too, on every row
    for name, want in (("faces", "centerface@"), ("people", "hog-people@"), ("sound_events", "yamnet")):
        assert seg.models.map(lambda m: (m[name] or "").startswith(want)).all(), (name, models)
        assert rep.videos.models.map(lambda m: (m[name] or "").startswith(want)).all(), (name, models)
    emb = np.stack(seg.embedding.to_numpy())
    assert emb.shape[1] == 384 and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert (rep.videos.config_hash == seg.config_hash.iloc[0]).all()


# The default class (vidan/data/taxonomy.yaml) of each scene whose picture or words leave
# no doubt: (file, a time inside the scene, class).
CLEAR_CLASSES = [("coffee.mp4", 4.0, "food_and_drink"), ("cat nap.mkv", 3.5, "animals"),
                 ("scenes.mp4", 4.0, "space_and_rockets"), ("scenes.mp4", 11.5, "food_and_drink"),
                 ("scenes.mp4", 19.0, "sports")]


@pytest.mark.parametrize("name, t, label", CLEAR_CLASSES)
def test_clear_segments_are_classified(report, name, t, label):
    _, rep = report
    classes = [x for x in _segment_at(rep, name, t).tags if x["kind"] == "classification"]
    assert classes and classes[0]["label"] == label, classes
    assert all(x["source"] == "fused" and x["score"] >= vidan.Config().tags.threshold for x in classes)
    assert [x["score"] for x in classes] == sorted((x["score"] for x in classes), reverse=True)


USER_TAXONOMY = """\
name: my-shelf
version: 2
classes:
  - label: hot_drinks
    prompts: ["a cup of coffee", "a mug of hot tea"]
  - label: house_cats
    prompts: ["a pet cat", "a kitten asleep on the sofa"]
  - volcanoes
"""


def test_a_user_taxonomy_replaces_the_default_classes(folder, tmp_path):
    """`vidan analyze --taxonomy FILE`: the user's classes tag the segments, the bundled ones
    never do."""
    import shutil

    from log_guard import run_vidan
    from vidan.tags import load_taxonomy

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(folder / "coffee.mp4", src)
    shutil.copy(folder / "sub" / "cat nap.mkv", src)
    tax = tmp_path / "mine.yaml"
    tax.write_text(USER_TAXONOMY)
    proc = run_vidan("analyze", src, "--out", tmp_path / "out", "--taxonomy", tax, "--local", "--quiet", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = vidan.load_report(tmp_path / "out")
    classes = {row.path.rsplit("/", 1)[-1]: [t["label"] for t in row.tags if t["kind"] == "classification"]
               for row in rep.segments.itertuples()}
    assert classes["coffee.mp4"][:1] == ["hot_drinks"], classes
    assert classes["cat nap.mkv"][:1] == ["house_cats"], classes
    used = {label for labels in classes.values() for label in labels}
    assert not used & set(load_taxonomy().labels), used
    assert set(rep.segments.models.map(lambda m: m["taxonomy"])) == {"my-shelf@2"}


def test_tags_carry_label_score_and_source(report):
    _, rep = report
    segs = _segments(rep, "cat nap.mkv")
    tags = [t for ts in segs.tags for t in ts]
    kinds = {t["kind"] for t in tags}
    assert {"classification", "visual", "audio", "keyword", "language"} <= kinds
    assert all(set(t) == {"label", "score", "source", "kind"} for t in tags)
    visual = [t["label"].lower() for t in tags if t["kind"] == "visual"]
    assert any("cat" in lab or "tabby" in lab for lab in visual), visual
    assert "speech" in {t["label"] for t in tags if t["kind"] == "audio"}


def test_report_reads_directly_with_pandas(report):
    summary, rep = report
    videos = pd.read_parquet(summary.out / "videos")
    segments = pd.read_parquet(summary.out / "segments")
    assert len(videos) == len(rep.videos) and len(segments) == len(rep.segments)
    assert not any(p.name.startswith(".staging") for p in summary.out.iterdir() if p.is_dir())


@pytest.mark.parametrize("query, name, scene", [
    ("my cat sleeps on the sofa", "cat nap.mkv", None),
    ("a rocket lifting off into the sky", "scenes.mp4", 0),
    ("baking bread with flour and yeast", "scenes.mp4", 1),
    ("the crowd cheered when the team scored a goal", "scenes.mp4", 2),
    ("a strong cup of coffee in the morning", "coffee.mp4", None),
])
def test_search_finds_the_right_video_and_scene(report, query, name, scene):
    summary, _ = report
    hits = search(query, summary.out, top=3)
    assert hits[0].path.endswith(name), [(h.path, h.start_s, h.score) for h in hits]
    if scene is not None:
        # the segment is the scene itself, not a span that merely overlaps it
        a, b = SCENES[scene]
        assert abs(hits[0].start_s - a) <= 0.5 and abs(hits[0].end_s - b) <= 0.5, (hits[0], SCENES[scene])


def test_search_finds_a_silent_video_by_its_picture(report):
    # silent.mp4 has no sound, so only its frames can bring it up. ImageNet has no astronaut
    # class: EfficientNet-Lite0 reads this photo (a person in a padded orange suit beside a
    # helmet) as bobsled, torch and ballplayer, so the query names what the classifier sees
    # in it; none of the other pictures looks like that to it.
    summary, _ = report
    hits = search("a bobsled", summary.out, top=3)
    assert hits[0].path.endswith("silent.mp4"), [(h.path, h.start_s, h.score) for h in hits]
    assert hits[0].transcript is None and hits[0].modality in ("fused", "visual")


def test_search_finds_what_is_shown_but_never_said(report):
    # From 8 to 15 s scenes.mp4 shows the coffee photo while the voice talks about bread, so
    # only that scene's frames can lead "a cup of coffee" there.
    summary, _ = report
    hits = [h for h in search("a cup of coffee", summary.out, top=5) if h.path.endswith("scenes.mp4")]
    assert hits, "no segment of scenes.mp4 found"
    a, b = SCENES[1]
    assert abs(hits[0].start_s - a) <= 0.5 and abs(hits[0].end_s - b) <= 0.5, hits[0]
    assert hits[0].modality == "visual" and "coffee" not in hits[0].transcript.lower(), hits[0]


def test_shot_cuts_and_segment_starts_follow_the_edit(report):
    _, rep = report
    # scenes.mp4 has a hard cut at 8.0 s and a fade through black around 15 s, nothing else
    cuts = list(_video(rep, "scenes.mp4").shot_cuts)
    assert [c["kind"] for c in cuts] == ["cut", "fade"], cuts
    assert abs(cuts[0]["t_s"] - 8.0) <= 0.2 and abs(cuts[1]["t_s"] - 15.0) <= 0.5, cuts
    segs = _segments(rep, "scenes.mp4")
    assert segs.start_reason.iloc[0] == "start"
    assert list(segs[(segs.start_s - 8.0).abs() <= 0.2].start_reason) == ["shot_cut"], segs
    assert list(segs[(segs.start_s - 15.0).abs() <= 0.5].start_reason) == ["fade"], segs
    # the other files are one slowly panned photo each: a single shot, so no cut and no segment started by one
    for name in ("coffee.mp4", "cat nap.mkv", "silent.mp4"):
        assert list(_video(rep, name).shot_cuts) == [], name
        assert not set(_segments(rep, name).start_reason) & {"shot_cut", "fade"}, name


def test_search_cli_json_lines(report):
    import json

    from log_guard import run_vidan

    summary, _ = report

    proc = run_vidan("search", "a cat asleep on the sofa", "--reports", summary.out, "--top", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 3
    assert {"path", "video_id", "start_s", "end_s", "score", "modality"} <= set(lines[0])
    assert lines[0]["path"].endswith("cat nap.mkv")
    assert lines[0]["modality"] in ("fused", "visual", "text")
    assert [x["score"] for x in lines] == sorted((x["score"] for x in lines), reverse=True)

