"""Cheap audio descriptors: voice activity, loudness, and a small acoustic fingerprint.

Numpy only, plus faster-whisper's bundled Silero VAD (ONNX); no torch.
Audio is float32 mono in [-1, 1].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vidan.records import Span

VAD_RATE = 16000
SILENCE_DB = -100.0  # floor for digital silence
MIN_EMBED_S = 0.1
N_MELS = 32
EMBED_DIM = 2 * N_MELS


def _mono_f32(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono 1-D samples, got shape {a.shape}")
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a


def _resample_linear(a: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or a.size == 0:
        return a
    n = int(round(a.size * target / rate))
    src_t = np.arange(a.size) / rate
    dst_t = np.arange(n) / target
    return np.interp(dst_t, src_t, a).astype(np.float32)


def speech_spans(audio: np.ndarray, *, offset_s: float = 0.0, rate: int = 16000,
                 min_silence_s: float = 0.3, pad_s: float = 0.1, threshold: float = 0.5) -> list[Span]:
    """Where someone speaks, as absolute spans (``offset_s`` added), in order.

    Pauses shorter than ``min_silence_s`` do not split a span, so the spans' gaps are
    real pauses a segment boundary can move to. Silero VAD works at 16 kHz; other
    rates are resampled (linearly: enough for voice activity).
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    a = _resample_linear(_mono_f32(audio), rate, VAD_RATE)
    if a.size < 512 or float(np.max(np.abs(a))) < 1e-4:  # under one VAD window, or digital silence
        return []
    opts = VadOptions(threshold=threshold, min_silence_duration_ms=int(min_silence_s * 1000),
                      speech_pad_ms=int(pad_s * 1000))
    chunks = get_speech_timestamps(a, opts, sampling_rate=VAD_RATE)
    dur = a.size / VAD_RATE
    spans = []
    for c in chunks:
        s = max(0.0, c["start"] / VAD_RATE)
        e = min(dur, c["end"] / VAD_RATE)
        if e > s:
            spans.append(Span(offset_s + s, offset_s + e))
    return spans


def loudness_db(audio: np.ndarray, *, hop_s: float = 0.1, rate: int = 16000) -> np.ndarray:
    """RMS level in dBFS of each ``hop_s`` block (the last one may be shorter).

    A full-scale sine is -3 dB; digital silence is floored at -100 dB.
    """
    a = _mono_f32(audio).astype(np.float64)
    hop = max(1, int(round(hop_s * rate)))
    n = -(-a.size // hop)  # ceil
    if n == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(n * hop)
    padded[:a.size] = a * a
    counts = np.full(n, hop, dtype=np.float64)
    counts[-1] = a.size - (n - 1) * hop
    ms = padded.reshape(n, hop).sum(axis=1) / counts
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(ms)
    return np.maximum(db, SILENCE_DB).astype(np.float32)


@lru_cache(maxsize=8)
def _mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), shape (n_mels, n_fft // 2 + 1)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    f_max = rate / 2
    mels = np.linspace(hz_to_mel(20.0), hz_to_mel(f_max), n_mels + 2)
    edges = mel_to_hz(mels)
    freqs = np.linspace(0.0, f_max, n_fft // 2 + 1)
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    return fb


def log_mel(audio: np.ndarray, *, rate: int = 16000, win_s: float = 0.025, hop_s: float = 0.010,
            n_mels: int = N_MELS) -> np.ndarray:
    """Log mel energies, float64 (frames, n_mels). Empty when the audio is shorter than one window."""
    a = _mono_f32(audio).astype(np.float64)
    win = int(round(win_s * rate))
    hop = int(round(hop_s * rate))
    if a.size < win:
        return np.zeros((0, n_mels))
    n_fft = 1 << (win - 1).bit_length()
    n_frames = 1 + (a.size - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = a[idx] * np.hanning(win)[None, :]
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    mel = power @ _mel_filterbank(rate, n_fft, n_mels).T
    return np.log(mel + 1e-10)


def acoustic_embedding(audio: np.ndarray, *, rate: int = 16000) -> np.ndarray | None:
    """A 64-d fingerprint of what the audio sounds like, L2-normalised float32.

    The first 32 values are the mean log-mel spectrum with its average removed
    (spectral shape, independent of gain: loudness has its own measure), the last 32
    the standard deviation of each band over time (how it changes). None for less
    than 0.1 s of audio; all zeros for digital silence, which has no shape to describe
    (its cosine with anything is 0).

    Crude by design (no learned audio model is available offline), but it tells
    speech, tones and noise apart and is deterministic.
    """
    a = _mono_f32(audio)
    if a.size < MIN_EMBED_S * rate:
        return None
    m = log_mel(a, rate=rate)
    if m.shape[0] == 0:
        return None
    mean = m.mean(axis=0)
    v = np.concatenate([mean - mean.mean(), m.std(axis=0)])
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:  # rounding noise of a flat spectrum, not a shape
        return np.zeros(EMBED_DIM, np.float32)
    return (v / norm).astype(np.float32)
