"""Tags: taxonomy classes, visual labels, audio tags and transcript keywords.

Pure logic: embeddings come in as arrays, so all scoring is testable without a model.
Every tag carries ``label``, ``score``, ``source`` (the modality it came from) and
``kind`` (classification, visual, audio, language, keyword).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from vidan.config import ConfigError, load_mapping


@dataclass(frozen=True)
class Tag:
    label: str
    score: float
    source: str  # "fused" | "visual" | "audio" | "text"
    kind: str  # "classification" | "visual" | "audio" | "language" | "keyword"

    def as_dict(self) -> dict:
        return {"label": self.label, "score": float(self.score), "source": self.source, "kind": self.kind}


@dataclass(frozen=True)
class TaxonomyClass:
    label: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    name: str
    version: str
    classes: tuple[TaxonomyClass, ...]

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


def default_taxonomy_path() -> Path:
    return Path(str(resources.files("vidan") / "data" / "taxonomy.yaml"))


def load_taxonomy(path: Optional[str | Path] = None) -> Taxonomy:
    """Read a taxonomy (YAML or TOML): ``{name, version, classes: [{label, prompts: [...]}]}``.

    A class may give ``prompts`` or just a ``label``, which then serves as its own prompt.
    """
    p = Path(path) if path else default_taxonomy_path()
    if not p.is_file():
        raise ConfigError(f"taxonomy file not found: {p}")
    data = load_mapping(p)
    raw = data.get("classes")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{p}: a taxonomy needs a non-empty 'classes' list")
    classes = []
    seen = set()
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"label": item}
        if not isinstance(item, dict) or not isinstance(item.get("label"), str) or not item["label"].strip():
            raise ConfigError(f"{p}: classes[{i}] needs a 'label' string")
        label = item["label"].strip()
        if label in seen:
            raise ConfigError(f"{p}: duplicate class label {label!r}")
        seen.add(label)
        prompts = item.get("prompts") or [label.replace("_", " ")]
        if not isinstance(prompts, list) or not all(isinstance(s, str) and s.strip() for s in prompts):
            raise ConfigError(f"{p}: classes[{i}].prompts must be a list of non-empty strings")
        classes.append(TaxonomyClass(label, tuple(s.strip() for s in prompts)))
    return Taxonomy(name=str(data.get("name", p.stem)), version=str(data.get("version", "1")), classes=tuple(classes))


def class_embeddings(taxonomy: Taxonomy, encode) -> np.ndarray:
    """(K, D) unit vectors: each class is the mean of its prompts' embeddings."""
    from vidan.fusion import l2_normalize

    rows = []
    for c in taxonomy.classes:
        rows.append(l2_normalize(np.asarray(encode(list(c.prompts))).mean(axis=0)))
    return np.stack(rows).astype(np.float32)


def classify(embedding: Optional[np.ndarray], class_emb: np.ndarray, labels: Sequence[str], *,
             threshold: float, top_k: int) -> list[Tag]:
    """Zero-shot classes whose cosine with ``embedding`` reaches ``threshold``, best first.

    A segment may end with no class at all: an unrelated segment should not be forced
    into the nearest bucket.
    """
    if embedding is None or not np.any(embedding):
        return []
    scores = class_emb @ np.asarray(embedding, np.float32)
    order = np.argsort(scores)[::-1][:top_k]
    return [Tag(labels[i], float(scores[i]), "fused", "classification") for i in order if scores[i] >= threshold]


def visual_labels(mean_probs: Optional[np.ndarray], labels: Sequence[str], *, top_k: int, min_score: float) -> list[Tag]:
    if mean_probs is None:
        return []
    order = np.argsort(mean_probs)[::-1][:top_k]
    return [Tag(labels[i], float(mean_probs[i]), "visual", "visual") for i in order if mean_probs[i] >= min_score]


# Thresholds for the audio tags. Speech: share of the segment that voice activity
# detection marks as speech. Silence: RMS level in dBFS, below the floor of quiet rooms.
SPEECH_RATIO_MIN = 0.2
SILENCE_DB = -50.0


def audio_tags(speech_ratio: Optional[float], loudness_db: Optional[float]) -> list[Tag]:
    if speech_ratio is None:
        return []
    tags = []
    if speech_ratio >= SPEECH_RATIO_MIN:
        tags.append(Tag("speech", float(speech_ratio), "audio", "audio"))
    if loudness_db is not None and loudness_db <= SILENCE_DB:
        # map -50 dB .. -100 dB onto 0.5 .. 1.0 so quieter means more certain
        tags.append(Tag("silence", float(min(1.0, 0.5 + (SILENCE_DB - loudness_db) / 100.0)), "audio", "audio"))
    elif speech_ratio < SPEECH_RATIO_MIN:
        tags.append(Tag("non_speech_sound", float(1.0 - speech_ratio), "audio", "audio"))
    return tags


def language_tag(language: Optional[str], probability: Optional[float], has_words: bool) -> list[Tag]:
    if not language or not has_words:
        return []
    return [Tag(language, float(probability if probability is not None else 1.0), "audio", "language")]


_STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just let me more most my myself no nor not now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves also get got go going gonna like
one really right said say says see thing things think well yeah yes oh okay ok um uh know make made want way
us it's i'm don't that's there's we're you're they're can't won't isn't
""".split())

_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)


def content_words(text: str) -> list[str]:
    """Lower-cased words of 3+ letters that are not stop words, in order."""
    words = [w.lower().strip("'-") for w in _WORD.findall(text)]
    return [w for w in words if len(w) >= 3 and w not in _STOPWORDS]


def keywords(text: Optional[str], k: int) -> list[Tag]:
    """Up to ``k`` content words of a transcript, scored by count then length.

    Deliberately simple and language-agnostic beyond an English stop list: the point
    is filterable retrieval tags, the embeddings carry the meaning.
    """
    if not text:
        return []
    words = content_words(text)
    if not words:
        return []
    counts = Counter(words)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0]))[:k]
    top = ranked[0][1]
    return [Tag(w, c / top, "text", "keyword") for w, c in ranked]


def label_keywords(visual: Sequence[Tag]) -> list[Tag]:
    """Retrieval keywords from visual labels: 'coffee mug, coffee cup' -> 'coffee mug'."""
    out = []
    for t in visual:
        out.append(Tag(t.label.split(",")[0].strip().lower(), t.score, "visual", "keyword"))
    return out
