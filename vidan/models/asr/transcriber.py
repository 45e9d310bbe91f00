"""What both Whisper backends share: preparing items, detecting and checking languages,
building transcripts. A backend supplies ``_detect`` and ``_decode``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from vidan.config import AsrConfig
from vidan.models.asr.items import RATE, LanguageGuess, RawWord, SpeechItem, Transcript
from vidan.models.asr.languages import COMPRESSION_RATIO_THRESHOLD, best_language, candidate_languages, \
    compression_ratio, restrict_languages
from vidan.models.asr.prepare import _Prepared, _prepare
from vidan.records import Word

# An unsure guess is trusted without more decoding when its transcript is fluent (mean
# log-probability of its words at least this: about 0.67 a word) and its text reads as
# that language. Clear English clips get p 0.77-0.85 from base: without this, 16 of 40
# clean 8 s clips were decoded three times over for nothing.
FLUENT_WORD_LOGPROB = -0.4


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
