"""From a clip's audio to the speech pieces Whisper hears: silence and bad samples caught,
voice activity found (or taken from the audio stage), long speech cut at quiet moments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from vidan.models.asr.items import MIN_AUDIO_S, RATE, SILENCE_PEAK, WINDOW_S, SpeechItem
from vidan.models.asr.windows import pack_windows

# Language detection hears the first speech of a clip at its own length, not padded to a
# 30-second window: CTranslate2's encoder takes shorter inputs, and 8 s of speech cost a
# fifth of the padded window's time (1.2 s a clip on one busy core) with the same guesses
# on the bundled speech (tests/test_asr.py). Never shorter than this many seconds, the
# length the guesses were checked down to.
DETECT_MIN_S = 10.0


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
