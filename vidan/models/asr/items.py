"""What goes into speech recognition and what comes out: plain data, no model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from vidan.records import Word

RATE = 16000
MIN_AUDIO_S = 0.1  # shorter audio is not worth a model call
SILENCE_PEAK = 1e-4  # peak amplitude under which audio is digital silence
WINDOW_S = 30.0  # Whisper hears 30 seconds at a time

RawWord = tuple[float, float, str, float]  # start_s, end_s, text, probability


@dataclass
class SpeechItem:
    """One clip for ``transcribe_many``.

    ``speech``: voice-activity spans in seconds from the start of ``audio``; ``[]`` means
    no speech (no words come back); ``None`` lets the model find them (Silero VAD when
    ``asr.vad``, else all the audio). ``language`` pins this clip's language.
    """

    audio: np.ndarray
    offset_s: float = 0.0
    speech: Optional[list[tuple[float, float]]] = None
    language: Optional[str] = None


@dataclass
class LanguageGuess:
    """Whisper's language detection, restricted to ``asr.languages`` and renormalised."""

    language: str
    probability: float
    ranked: list[tuple[str, float]]  # every allowed language, likeliest first


@dataclass
class Transcript:
    """What was said in one piece of audio.

    ``words`` carry absolute times (``offset_s`` added), in order. ``no_speech_prob`` is
    the MAXIMUM of Whisper's per-window no-speech probabilities: one doubtful window is
    enough to make the whole transcript suspect. Audio with nothing recognised gives no
    words and ``language=None`` (a language "detected" in silence means nothing).
    ``language`` is the final choice and ``language_probability`` Whisper's probability
    for it (1.0 when pinned); ``detected_language``/``detected_probability`` are
    Whisper's own first guess (None when the language was pinned).
    """

    words: list[Word] = field(default_factory=list)
    language: Optional[str] = None
    language_probability: Optional[float] = None
    no_speech_prob: Optional[float] = None
    text: str = ""
    detected_language: Optional[str] = None
    detected_probability: Optional[float] = None


class AsrModel(Protocol):
    model_id: str

    def transcribe(self, audio: np.ndarray, *, offset_s: float = 0.0,
                   language: Optional[str] = None) -> Transcript: ...

    def transcribe_many(self, items: list[SpeechItem]) -> list[Transcript]: ...
