"""Word error rate, for checking transcripts against known text.

Text is normalised before comparing (lower case, punctuation removed, apostrophes
kept inside words) so "coffee," and "Coffee" count as the same word.
"""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s']+")
_EDGE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalise_words(text: str) -> list[str]:
    t = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    t = _NON_WORD.sub(" ", t)
    t = _EDGE_APOSTROPHE.sub(" ", t)
    return t.split()


def word_error_rate(ref: str, hyp: str) -> float:
    """(substitutions + deletions + insertions) / words in ``ref``.

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise, so the
    result is always defined.
    """
    r = normalise_words(ref)
    h = normalise_words(hyp)
    if not r:
        return 0.0 if not h else 1.0
    # Levenshtein distance over words, one row at a time.
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(r)
