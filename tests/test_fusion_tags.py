import numpy as np
import pytest

from vidan.config import ConfigError
from vidan.fusion import conse, fuse, l2_normalize
from vidan.tags import (Taxonomy, TaxonomyClass, audio_tags, classify, is_filler, keywords, load_taxonomy,
                        text_weight, visual_labels)


def unit(*v):
    return l2_normalize(np.array(v, np.float32))


def test_fuse_renormalises_weights_over_present_modalities():
    f = fuse({"visual": unit(1, 0), "text": None}, {"visual": 0.5, "text": 0.5})
    assert f.weights == {"visual": 1.0, "text": 0.0, "sounds": 0.0}
    assert f.present == {"visual": True, "text": False, "sounds": False}
    assert np.allclose(f.embedding, [1, 0])
    both = fuse({"visual": unit(1, 0), "text": unit(0, 1)}, {"visual": 0.5, "text": 0.5})
    assert np.allclose(both.embedding, unit(1, 1)) and np.isclose(np.linalg.norm(both.embedding), 1)


def test_fuse_with_nothing_present_is_zero():
    f = fuse({"visual": None, "text": None}, {"visual": 0.5, "text": 0.5})
    assert not any(f.present.values()) and f.embedding.size == 0


def test_conse_is_the_weighted_mean_of_top_labels():
    labels = np.eye(4, dtype=np.float32)
    v, conf = conse(np.array([0.6, 0.3, 0.1, 0.0]), labels, top_t=2)
    assert np.allclose(v, unit(0.6, 0.3, 0, 0))
    # 0.9 of the mass in the top two, and two orthogonal labels shorten the mean
    assert conf == pytest.approx(0.9 * np.linalg.norm([2 / 3, 1 / 3]))
    _, sure = conse(np.array([0.97, 0.01, 0.01, 0.01]), labels, top_t=2)
    assert sure > conf


def test_classify_threshold_allows_no_tag():
    classes = np.stack([unit(1, 0), unit(0, 1)])
    tags = classify(unit(1, 0.1), classes, ["a", "b"], threshold=0.5, top_k=3)
    assert [t.label for t in tags] == ["a"] and tags[0].source == "fused"
    assert classify(unit(-1, -1), classes, ["a", "b"], threshold=0.3, top_k=3) == []


def test_visual_labels_and_audio_tags():
    probs = np.array([0.7, 0.2, 0.05, 0.05])
    assert [t.label for t in visual_labels(probs, ["cat", "dog", "x", "y"], top_k=2, min_score=0.1)] == ["cat", "dog"]
    assert audio_tags(None, None) == []
    assert [t.label for t in audio_tags(0.8, -20.0)] == ["speech"]
    assert [t.label for t in audio_tags(0.0, -95.0)] == ["silence"]
    assert [t.label for t in audio_tags(0.0, -20.0)] == ["non_speech_sound"]
    # a voice recorded far too quietly: the event model scores it low, voice activity hears it
    assert [t.label for t in audio_tags(0.69, -66.0, {"speech": 0.05})] == ["speech"]
    assert [t.label for t in audio_tags(0.69, -66.0)] == ["speech"]
    assert [t.label for t in audio_tags(0.0, -66.0, {"speech": 0.05})] == ["silence"]
    # loud: the events decide, as before (voice activity fires on busy music)
    assert [t.label for t in audio_tags(0.69, -20.0, {"speech": 0.05, "music": 0.9})] == ["music", "non_speech_sound"]


def test_keywords_skip_stopwords_and_rank_by_count():
    kw = keywords("The rocket, the rocket! It climbed into the blue sky.", 3)
    assert [t.label for t in kw][:1] == ["rocket"]
    assert all(t.kind == "keyword" and t.source == "text" for t in kw)
    assert "the" not in [t.label for t in kw]
    assert keywords(None, 5) == [] and keywords("", 5) == []


def test_hesitations_and_laughter_are_not_keywords_nor_count_as_words():
    # what Whisper hears on a film without dialogue (Big Buck Bunny gave a "hmm" tag)
    said = "Hmm. Hmmm... Mm-hmm. Uh-huh, uhm, haha. Ahh! Ooh."
    assert keywords(said, 5) == [] and text_weight(said) == 0.0
    kw = [t.label for t in keywords("Hmm, the hammer. Mmm, a hammer and a mum at home.", 5)]
    assert kw[0] == "hammer" and {"home", "mum"} <= set(kw) and not {"hmm", "mmm"} & set(kw)
    # words as Whisper gives them, spaces and punctuation around
    assert all(is_filler(w) for w in (" Hmm.", " Mm-hmm,", "...", " Haha!", " uhm"))
    assert not any(is_filler(w) for w in (" Yes.", " hum", " Oh,no", " Ahead"))


def test_default_taxonomy_loads_and_user_taxonomy_in_yaml_and_toml(tmp_path):
    t = load_taxonomy()
    assert len(t.classes) >= 8 and all(c.prompts for c in t.classes)
    y = tmp_path / "t.yaml"
    y.write_text("name: mine\nclasses:\n  - label: dogs\n    prompts: [a dog]\n  - cats\n")
    assert load_taxonomy(y) == Taxonomy("mine", "1", (TaxonomyClass("dogs", ("a dog",)), TaxonomyClass("cats", ("cats",))))
    toml = tmp_path / "t.toml"
    toml.write_text('name = "mine"\n[[classes]]\nlabel = "dogs"\nprompts = ["a dog"]\n')
    assert load_taxonomy(toml).labels == ["dogs"]


@pytest.mark.parametrize("text, why", [("classes: []\n", "non-empty 'classes' list"),
                                       ("classes:\n  - label: a\n  - label: a\n", "duplicate class label 'a'"),
                                       ("classes:\n  - prompts: [x]\n", r"classes\[0\] needs a 'label'")])
def test_bad_taxonomy_is_a_clear_error(tmp_path, text, why):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=why):
        load_taxonomy(p)


# --- rows: detections and sound events reach tags, classes and the embedding ----------

from types import SimpleNamespace  # noqa: E402

from vidan.assemble import VideoParts, gather  # noqa: E402
from vidan.config import Config  # noqa: E402
from vidan.records import AudioPart, Box, FramePart, MediaInfo, Span, StreamInfo, Word  # noqa: E402

PEOPLE_TAXONOMY = """\
name: street
classes:
  - label: people walking
    description: people walking in the street or in a hall
  - label: a crowd
    description: a crowd of people, an audience
  - label: coffee
    description: a cup of coffee or tea
  - label: music
    description: music, songs and instruments
  - label: cars
    description: cars and traffic on a road
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from vidan.labels import label_bank
    from vidan.models.sound_events import yamnet_labels
    from vidan.models.text import load_text_encoder
    from vidan.models.vision import imagenet_labels
    from vidan.tags import class_embeddings

    path = tmp_path_factory.mktemp("tax") / "street.yaml"
    path.write_text(PEOPLE_TAXONOMY)
    text = load_text_encoder("cpu")
    labels = imagenet_labels()
    taxonomy = load_taxonomy(path)
    return SimpleNamespace(config=Config().replace(segments={"plan": "fixed", "window_s": 5.0}), text=text,
                           labels=labels, label_emb=label_bank(text, labels), taxonomy=taxonomy,
                           class_emb=class_embeddings(taxonomy, text.encode), event_labels=list(yamnet_labels()))


def _parts(probs, *, faces=None, people=None, boxes=None, events=None, words=(), vad=()):
    """One 5 s segment: two frames with ``probs``, audio with ``events`` rows (one a second)."""
    info = MediaInfo(path="/v.mp4", size_bytes=1, container="mp4", duration_s=5.0, start_time_s=0.0,
                     streams=(StreamInfo(0, "video", "h264"), StreamInfo(1, "audio", "aac")))
    p = VideoParts(info, transcribed=True)
    p.frames = [FramePart(span=Span(0, 5), times_s=np.array([1.0, 3.0]), probs=np.stack([probs, probs]), cuts=[],
                          backend="pyav", frames_decoded=2, frames_sampled=2, faces=faces, people=people, boxes=boxes)]
    p.audio = [AudioPart(span=Span(0, 5), words=list(words), language="en" if words else None,
                         language_probability=0.9 if words else None, no_speech_prob=0.1, speech=list(vad),
                         loudness_hop_s=1.0, loudness_db=np.full(5, -20.0, np.float32),
                         events=None if events is None else np.tile(np.asarray(events, np.float16), (5, 1)))]
    return p


def _flat(n=1000):
    return np.full(n, 1.0 / n, np.float32)  # a frame the classifier cannot read


def _one_hot(labels, name):
    v = np.full(len(labels), 1e-4, np.float32)
    v[labels.index(name)] = 1.0
    return v / v.sum()


def _rows(models, parts):
    from vidan.rows import segment_rows

    return segment_rows("vid", "/v.mp4", gather(parts, models.config), models, {"config_hash": "h", "run_id": "r"})


def _classes(row):
    return [t["label"] for t in row["tags"] if t["kind"] == "classification"]


def _events(models, **scores):
    v = np.zeros(len(models.event_labels), np.float32)
    for name, s in scores.items():
        v[models.event_labels.index(name.replace("_", " "))] = s
    return v


def test_people_found_by_the_detectors_reach_tags_classes_and_the_embedding(models):
    walkers = [Box("person", 0.1 * i, 0.2, 0.1 * i + 0.1, 0.9, 3.0) for i in range(2)]
    (row,) = _rows(models, _parts(_flat(), faces=np.array([0, 0], np.int16), people=np.array([3.0, 2.5], np.float32),
                                  boxes=[walkers, walkers]))
    assert _classes(row)[0] == "people walking"
    person = next(t for t in row["tags"] if t["label"] == "person")
    assert person["kind"] == "visual" and 0.5 < person["score"] < 1
    assert row["n_faces"] == 0 and [b["kind"] for b in row["boxes"]] == ["person", "person"]
    # many people in one frame: a crowd
    crowd = [Box("person", 0.1 * i, 0.2, 0.1 * i + 0.1, 0.9, 3.0) for i in range(5)]
    (row,) = _rows(models, _parts(_flat(), faces=np.array([4, 3], np.int16), people=np.array([3.0, 3.0], np.float32),
                                  boxes=[crowd, crowd]))
    assert _classes(row)[0] == "a crowd" and row["n_faces"] == 4
    # the same frames without detectors: no class could be read, and no person
    (row,) = _rows(models, _parts(_flat()))
    assert _classes(row) == [] and "person" not in row["tag_labels"]
    assert row["n_faces"] is None and row["boxes"] is None


def test_music_from_sound_events_and_no_speech_tag_where_events_hear_none(models):
    music = _events(models, Music=0.8, Guitar=0.5, Speech=0.05)
    # voice activity fires on the music (0.9 of the segment), the sound events say it is not speech
    (row,) = _rows(models, _parts(_flat(), events=music, vad=[Span(0.0, 4.5)]))
    assert _classes(row)[0] == "music"
    audio = [t["label"] for t in row["tags"] if t["kind"] == "audio"]
    assert "music" in audio and "speech" not in audio
    # talk heard by both
    talk = _events(models, Speech=0.9)
    words = [Word(0.5, 1.0, " my"), Word(1.0, 1.5, " coffee"), Word(1.5, 2.0, " is"), Word(2.0, 2.5, " hot")]
    (row,) = _rows(models, _parts(_flat(), events=talk, vad=[Span(0.5, 2.5)], words=words))
    assert [t["label"] for t in row["tags"] if t["kind"] == "audio"][0] == "speech"
    assert _classes(row)[0] == "coffee"


def test_a_lone_hesitation_tags_no_language_and_no_keyword(models):
    # Whisper on Big Buck Bunny: "Hmm." and nothing else
    talk = _events(models, Speech=0.6)
    (row,) = _rows(models, _parts(_flat(), events=talk, vad=[Span(0.5, 1.0)], words=[Word(0.5, 1.0, " Hmm.")]))
    assert row["transcript"].strip() == "Hmm."  # what was heard stays on record, with no language
    assert row["language"] is None and row["language_probability"] is None
    assert not [t for t in row["tags"] if t["kind"] in ("language", "keyword")], row["tags"]
    assert "hmm" not in row["keywords"]
    words = [Word(0.5, 1.0, " Hmm,"), Word(1.0, 1.5, " rockets"), Word(1.5, 2.0, " fly.")]
    (row,) = _rows(models, _parts(_flat(), events=talk, vad=[Span(0.5, 2.0)], words=words))
    assert [t["label"] for t in row["tags"] if t["kind"] == "language"] == ["en"] and row["language"] == "en"
    assert "rockets" in row["keywords"] and "hmm" not in row["keywords"]


def test_search_queries_find_people_and_music(models):
    from vidan.fusion import l2_normalize

    walkers = [Box("person", 0.2, 0.2, 0.3, 0.9, 3.0)]
    people = _rows(models, _parts(_flat(), people=np.array([3.0, 3.0], np.float32), faces=np.array([0, 0], np.int16),
                                  boxes=[walkers, walkers]))[0]
    music = _rows(models, _parts(_flat(), events=_events(models, Music=0.9)))[0]
    cup = _rows(models, _parts(_one_hot(models.labels, "espresso")))[0]
    segs = {"people": people, "music": music, "cup": cup}
    for query, want in (("people walking", "people"), ("music", "music"), ("a cup of coffee", "cup")):
        q = l2_normalize(models.text.encode([query])[0])
        best = max(segs, key=lambda k: float(np.dot(segs[k]["embedding"], q)))
        assert best == want, query


def test_rows_without_detectors_or_events_fit_the_schema(models):
    from vidan.report import SEGMENTS_SCHEMA, to_table

    rows = _rows(models, _parts(_one_hot(models.labels, "espresso"), words=[Word(0.5, 1.0, " hello")],
                                vad=[Span(0.5, 3.0)]))
    (row,) = rows
    assert row["language_detected"] is None and row["n_faces"] is None and row["boxes"] is None
    assert "speech" in row["tag_labels"]  # voice activity decides where no sound events ran
    boxed = _rows(models, _parts(_flat(), faces=np.array([1, 0], np.int16), people=np.array([0, 0], np.float32),
                                 boxes=[[Box("face", 0.1, 0.1, 0.2, 0.2, 0.9)]] * 2))
    table = to_table(rows + boxed, SEGMENTS_SCHEMA)
    assert table.column("n_faces").to_pylist() == [None, 1]
    assert table.column("boxes").to_pylist()[1][0]["kind"] == "face"


def test_a_class_may_give_a_description_and_examples(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("classes:\n  - label: pets\n    description: cats and dogs kept at home\n    examples: [a cat]\n"
                 "  - label: space\n    prompts: [a rocket]\n    examples: [stars]\n")
    t = load_taxonomy(p)
    assert t.classes[0].prompts == ("pets", "cats and dogs kept at home", "a cat")
    assert t.classes[1].prompts == ("space", "a rocket", "stars")
    p.write_text("classes:\n  - label: pets\n    examples: cats\n")
    with pytest.raises(ConfigError, match="examples must be a list"):
        load_taxonomy(p)
