"""Choosing a clip's language when Whisper is unsure (pure logic)."""

from __future__ import annotations

import zlib
from typing import Iterable, Optional, Sequence

MAX_CANDIDATES = 3  # languages decoded when Whisper's guess is unsure, its guess included
# Nats per token by which another language's transcript must beat the guessed one's.
SWITCH_MARGIN = 0.15
# Whisper's own limit: a transcript compressing better than this is a repetition loop
# (a Spanish clip guessed as Thai decodes to one syllable repeated, and scores well).
COMPRESSION_RATIO_THRESHOLD = 2.4


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
