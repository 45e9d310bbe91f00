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
    """Read a taxonomy (YAML or TOML): ``{name, version, classes: [{label, prompts, description, examples}]}``.

    A class may give ``prompts`` (phrases that describe it), a ``description`` (one
    sentence) and ``examples`` (things it contains); all of them, and the label, are
    embedded. A bare ``label`` serves as its own prompt.
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
        examples = item.get("examples") or []
        description = item.get("description")
        for key, val in (("prompts", prompts), ("examples", examples)):
            if not isinstance(val, list) or not all(isinstance(s, str) and s.strip() for s in val):
                raise ConfigError(f"{p}: classes[{i}].{key} must be a list of non-empty strings")
        if description is not None and not (isinstance(description, str) and description.strip()):
            raise ConfigError(f"{p}: classes[{i}].description must be a non-empty string")
        if item.get("prompts") and (description or examples):
            prompts = [label.replace("_", " "), *prompts]
        elif description or examples:
            prompts = [label.replace("_", " ")]
        prompts = [*prompts, *([description] if description else []), *examples]
        classes.append(TaxonomyClass(label, tuple(dict.fromkeys(s.strip() for s in prompts))))
    return Taxonomy(name=str(data.get("name", p.stem)), version=str(data.get("version", "1")), classes=tuple(classes))


def class_embeddings(taxonomy: Taxonomy, encode) -> np.ndarray:
    """(K, D) unit vectors: each class is the mean of its prompts' embeddings."""
    from vidan.fusion import l2_normalize

    prompts = [p for c in taxonomy.classes for p in c.prompts]
    emb = np.asarray(encode(prompts), np.float32)  # one call: a model call has a fixed cost
    rows, i = [], 0
    for c in taxonomy.classes:
        rows.append(l2_normalize(emb[i:i + len(c.prompts)].mean(axis=0)))
        i += len(c.prompts)
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


def audio_tags(speech_ratio: Optional[float], loudness_db: Optional[float],
               events: Optional[dict[str, float]] = None) -> list[Tag]:
    """speech / silence / non_speech_sound, and the sound-event groups (``event_groups``).

    With sound events, ``speech`` comes from them: voice activity detection also fires on
    singing and busy music, so a cartoon with a soundtrack is not tagged ``speech``. Under
    ``SILENCE_DB`` voice activity is trusted again: the event model scores quiet sound low
    whatever it is, while voice activity still hears a voice recorded far too quietly
    (speech at -66 dBFS was tagged ``silence``, its transcript beside it), and music that
    quiet does not fool it.
    """
    if speech_ratio is None and not events:
        return []
    tags = []
    quiet = loudness_db is not None and loudness_db <= SILENCE_DB
    if events:
        speechy = events.get("speech", 0.0) >= EVENT_MIN
        if speechy:
            tags.append(Tag("speech", float(events["speech"]), "audio", "audio"))
        elif quiet and speech_ratio is not None and speech_ratio >= SPEECH_RATIO_MIN:
            speechy = True
            tags.append(Tag("speech", float(speech_ratio), "audio", "audio"))
        for name, score in sorted(events.items(), key=lambda kv: -kv[1]):
            if name != "speech" and score >= EVENT_MIN:
                tags.append(Tag(name, float(score), "audio", "audio"))
    else:
        speechy = speech_ratio >= SPEECH_RATIO_MIN
        if speechy:
            tags.append(Tag("speech", float(speech_ratio), "audio", "audio"))
    if quiet and not speechy:
        # map -50 dB .. -100 dB onto 0.5 .. 1.0 so quieter means more certain
        tags.append(Tag("silence", float(min(1.0, 0.5 + (SILENCE_DB - loudness_db) / 100.0)), "audio", "audio"))
    elif not speechy and speech_ratio is not None:
        heard = events.get("speech", 0.0) if events else speech_ratio
        tags.append(Tag("non_speech_sound", float(1.0 - heard), "audio", "audio"))
    return tags


def language_tag(language: Optional[str], probability: Optional[float], has_words: bool) -> list[Tag]:
    """``has_words``: words other than hesitations were heard (a lone "Hmm." in a film
    without dialogue says nothing of a language)."""
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
# Hesitations and laughter, however many letters Whisper gives them ("Hmm.", "Mmm",
# "Uh-huh", "Haha"): on a film with no dialogue the model often hears only these, and a
# "hmm" tag says nothing a search could use.
# (RE2 syntax too: the re-tagger drops such keywords from stored rows with Arrow's regex.)
FILLER_PATTERN = r"(?:h*m+h*m*|u+[hm]+|a+h+|o+h+|e+h+|h+u+h+|h*(?:a+h+)+a*|(?:mm|uh|uhm?)-(?:hmm|huh|uh|hm))"
_FILLER = re.compile(FILLER_PATTERN, re.IGNORECASE)
FILLER_TRIM = " .,!?;:\u2026'\"-"  # what Whisper puts around a word


def is_filler(word: str) -> bool:
    """A hesitation or laughter ("Hmm.", "uh-huh,"), or punctuation alone."""
    w = word.strip(FILLER_TRIM).lower()
    return not w or bool(_FILLER.fullmatch(w))


def content_words(text: str) -> list[str]:
    """Lower-cased words of 3+ letters that are not stop words, in order."""
    words = [w.lower().strip("'-") for w in _WORD.findall(text)]
    return [w for w in words if len(w) >= 3 and w not in _STOPWORDS and not _FILLER.fullmatch(w)]


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


# --- classification from evidence -----------------------------------------------------
#
# Each modality is scored against the classes on its own and the scores are added,
# rather than averaging the modalities' vectors first: a scene of a cat with talk about
# coffee then keeps both readings, and a flat grey frame that the image classifier
# cannot read contributes nothing instead of pulling towards the class nearest the
# average ImageNet label.


@dataclass(frozen=True)
class Cue:
    """One piece of evidence in the sentence space: a unit vector, how much it counts
    (0..1, already times the modality's weight), and the modality it came from."""

    vector: np.ndarray
    weight: float
    source: str  # "visual" | "text" | "audio"
    # ConSE vectors are measured against each class's baseline over the image labels
    # (``class_baseline``); everything else against the mean over the classes.
    against_labels: bool = False


# A class's evidence e (summed over cues: each cue's cosine with the class above that
# class's baseline, times the cue's weight) is reported as the score e / (e + EVIDENCE_HALF),
# in 0..1. The default ``tags.threshold`` of 0.30 then asks for e >= 0.06, chosen on the
# evaluation set of benchmarks/bench_tags.py (a user's taxonomy, not the default one):
# lower gives flat and unreadable pictures a class, higher drops true ones said in a
# single sentence.
EVIDENCE_HALF = 0.14
SECOND_CLASS_SHARE = 0.5  # a second or third class needs this share of the best one's evidence

# Phrases that stand for what the detectors saw, in the sentence space.
PERSON_PHRASE = "people standing or walking, a person"
FACE_PHRASE = "a person's face, a man or a woman"
CROWD_PHRASE = "a crowd of people"
CROWD_MIN = 3  # people or faces in one frame that make a crowd

# A detector says someone is there, not what the scene is about: its phrase counts at
# most half as much as a sure reading of the picture, so words about the subject
# outweigh a face in the frame. Where the detectors ran and found nobody, person-centred
# classes lose a little (NOBODY_WEIGHT against the person phrase): talk of "the crowd"
# over an empty pitch is sport, not people.
DETECTOR_WEIGHT = 0.5
NOBODY_WEIGHT = 0.3

# HOG's person score is an SVM margin (>= the detector's own min_score, 2.0 by default);
# s / (s + PERSON_SCALE) maps it onto 0..1, 0.5 at that minimum.
PERSON_SCALE = 2.0


def class_baseline(class_emb: np.ndarray, label_emb: np.ndarray) -> np.ndarray:
    """(K,) each class's mean cosine with the image classifier's label names: what a
    picture the classifier cannot read scores, so that a class close to many labels
    ('sport': balls, helmets, rackets) does not win every unreadable frame."""
    return (np.asarray(label_emb, np.float32) @ np.asarray(class_emb, np.float32).T).mean(axis=0)


def cue_scores(cue: Cue, class_emb: np.ndarray, baseline: Optional[np.ndarray] = None) -> np.ndarray:
    """(K,) weight x (cosine with each class - the class's baseline).

    Without a baseline (text, detector phrases, sounds) the mean over the classes is the
    baseline, so only what sets one class apart from the others counts.
    """
    s = np.asarray(class_emb, np.float32) @ np.asarray(cue.vector, np.float32)
    base = baseline if baseline is not None else (np.full_like(s, s.mean()) if len(s) > 2 else np.zeros_like(s))
    if cue.weight < 0:  # evidence against: the classes it is about lose, the others gain nothing
        return cue.weight * np.maximum(s - base, 0.0)
    return cue.weight * (s - base)


def evidence_score(evidence: float) -> float:
    """A class's summed evidence as a score in 0..1 (0.30 at an evidence of 0.06)."""
    return float(evidence / (evidence + EVIDENCE_HALF)) if evidence > 0 else 0.0


def classify_cues(cues: Sequence[Cue], class_emb: np.ndarray, labels: Sequence[str], *,
                  visual_baseline: Optional[np.ndarray] = None, threshold: float = 0.30,
                  top_k: int = 3) -> list[Tag]:
    """Classes by summed evidence over ``cues``, best first; none whose score
    (``evidence_score``) is under ``threshold``.

    A segment with no confident class gets no classification tag at all.
    """
    cues = [c for c in cues if c.weight != 0 and c.vector is not None and np.any(c.vector)]
    if not cues or len(class_emb) == 0:
        return []
    per = [cue_scores(c, class_emb, visual_baseline if c.against_labels else None) for c in cues]
    total = np.sum(per, axis=0)
    out: list[Tag] = []
    order = np.argsort(-total)[:top_k]
    for i in order:
        # further classes only where they come near the best: not every faint echo
        if evidence_score(total[i]) < threshold or total[i] < SECOND_CLASS_SHARE * total[order[0]]:
            break
        out.append(Tag(labels[i], evidence_score(total[i]), "fused", "classification"))
    return out


def text_weight(transcript: Optional[str]) -> float:
    """How much a transcript counts: full from four content words, less for 'thank you'."""
    return min(1.0, len(content_words(transcript)) / 4) if transcript else 0.0


def person_score(people: Optional[float]) -> Optional[float]:
    """HOG's margin as 0..1 (None: detector off; 0: nobody)."""
    if people is None:
        return None
    return float(people / (people + PERSON_SCALE)) if people > 0 else 0.0


def person_tags(people: Optional[float], n_faces: Optional[int]) -> list[Tag]:
    """A ``person`` visual tag when the person or face detector saw someone."""
    p = person_score(people) or 0.0
    f = 0.8 if n_faces else 0.0  # the face detector's threshold already held
    s = max(p, f)
    return [Tag("person", s, "visual", "visual")] if s > 0 else []


def person_phrases(people: Optional[float], n_faces: Optional[int], n_people: int = 0) -> list[tuple[str, float]]:
    """(phrase, weight) for what the detectors saw: people, a face, a crowd; or, where
    they ran and saw nobody, the person phrase with a negative weight."""
    out = []
    p = person_score(people) or 0.0
    if p > 0:
        out.append((PERSON_PHRASE, DETECTOR_WEIGHT * p))
    if n_faces:
        out.append((FACE_PHRASE, DETECTOR_WEIGHT))
    if max(n_people, n_faces or 0) >= CROWD_MIN:
        out.append((CROWD_PHRASE, DETECTOR_WEIGHT))
    if not out and (people is not None or n_faces is not None):
        out.append((PERSON_PHRASE, -NOBODY_WEIGHT))
    return out


# --- sound events: YAMNet's 521 AudioSet classes grouped into readable tags ----------------
#
# tag: (phrase for the sentence space, AudioSet class names). A group's score is the
# best of its classes' segment means.
EVENT_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "speech": ("people talking", ("Speech", "Child speech, kid speaking", "Conversation", "Narration, monologue",
                                  "Babbling", "Speech synthesizer")),
    "music": ("music", ("Music", "Musical instrument", "Pop music", "Rock music", "Classical music", "Electronic music",
                        "Guitar", "Piano", "Drum", "Drum kit", "Orchestra", "Jazz", "Background music", "Song",
                        "Soundtrack music", "Theme music", "Hip hop music", "Dance music")),
    "singing": ("singing, a song", ("Singing", "Choir", "Child singing", "Rapping", "Vocal music", "A capella")),
    "applause": ("applause and cheering", ("Applause", "Clapping", "Cheering")),
    "crowd": ("a crowd of people", ("Crowd", "Chatter", "Hubbub, speech noise, speech babble", "Children playing")),
    "laughter": ("laughter", ("Laughter", "Giggle", "Belly laugh", "Chuckle, chortle", "Baby laughter")),
    "animal": ("animals", ("Animal", "Domestic animals, pets", "Livestock, farm animals, working animals", "Wild animals",
                           "Insect", "Frog")),
    "dog": ("a dog barking", ("Dog", "Bark", "Yip", "Howl", "Bow-wow", "Growling")),
    "cat": ("a cat meowing", ("Cat", "Purr", "Meow", "Caterwaul")),
    "bird": ("birds singing", ("Bird", "Bird vocalization, bird call, bird song", "Chirp, tweet", "Pigeon, dove", "Crow")),
    "vehicle": ("vehicles and traffic", ("Vehicle", "Motor vehicle (road)", "Car", "Truck", "Bus", "Motorcycle",
                                         "Traffic noise, roadway noise", "Car passing by", "Train", "Rail transport",
                                         "Aircraft", "Helicopter", "Fixed-wing aircraft, airplane", "Boat, Water vehicle")),
    "siren": ("a siren", ("Siren", "Emergency vehicle", "Police car (siren)", "Ambulance (siren)",
                          "Fire engine, fire truck (siren)", "Civil defense siren")),
    "engine": ("an engine running", ("Engine", "Idling", "Accelerating, revving, vroom", "Jet engine", "Aircraft engine")),
    "water": ("water, waves and rain", ("Water", "Rain", "Rain on surface", "Stream", "Waterfall", "Ocean", "Waves, surf")),
    "wind": ("wind", ("Wind", "Wind noise (microphone)", "Rustling leaves")),
    "thunder": ("a thunderstorm", ("Thunderstorm", "Thunder")),
    "explosion": ("explosions and gunfire", ("Explosion", "Gunshot, gunfire", "Fireworks", "Boom")),
    "tools": ("tools and machines", ("Tools", "Power tool", "Drill", "Hammer", "Sawing", "Jackhammer")),
    "kitchen": ("cooking in a kitchen", ("Dishes, pots, and pans", "Cutlery, silverware", "Chopping (food)",
                                         "Frying (food)", "Boiling", "Microwave oven", "Blender")),
}
EVENT_MIN = 0.2  # a group's score that makes a tag


def event_groups(mean_scores: Optional[np.ndarray], event_labels: Optional[Sequence[str]]) -> dict[str, float]:
    """Readable group -> score (the best of its classes), for a segment's mean event scores."""
    if mean_scores is None or event_labels is None:
        return {}
    index = {name: i for i, name in enumerate(event_labels)}
    scores = np.asarray(mean_scores, np.float32).reshape(-1)
    out = {}
    for tag, (_, names) in EVENT_GROUPS.items():
        idx = [index[n] for n in names if n in index and index[n] < len(scores)]
        if idx:
            out[tag] = float(scores[idx].max())
    return out


# --- classification from stored cues -------------------------------------------------
# Analysis and re-tagging score classes with this one function, from what each segment
# row stores (``frames_embedding``, ``text_embedding`` and the ``cues`` column), so
# ``vidan tag`` gives exactly the tags a fresh analysis would.

FRAMES_CUE, TEXT_CUE, PHRASE_CUE = "frames", "text", "phrase"


@dataclass
class CueTable:
    """The evidence of N segments: the frames' ConSE vector and the transcript's vector
    with their weights, and weighted phrases (detectors, sound events)."""

    frames: np.ndarray  # (N, D)
    frames_w: np.ndarray  # (N,)
    text: np.ndarray  # (N, D)
    text_w: np.ndarray  # (N,)
    phrases: list[str]  # (P,)
    phrase_w: np.ndarray  # (N, P)


def classify_many(cues: CueTable, phrase_emb: np.ndarray, class_emb: np.ndarray, visual_baseline: np.ndarray, *,
                  threshold: float, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classification of N segments at once, as ``classify_cues`` scores one: each cue's
    cosine with each class above that class's baseline, times its weight, summed.

    Returns (class index (N, k), score (N, k), chosen (N, k)); each row's chosen classes
    are a prefix, best first.
    """
    C = np.asarray(class_emb, np.float32)
    n, k = len(cues.frames_w), min(top_k, len(C))
    if n == 0 or k == 0:
        return np.zeros((n, k), np.int64), np.zeros((n, k), np.float32), np.zeros((n, k), bool)

    def centred(s: np.ndarray) -> np.ndarray:
        return s - s.mean(axis=-1, keepdims=True) if s.shape[-1] > 2 else s

    def live(v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.where(np.any(v != 0, axis=1), w, 0.0).astype(np.float32)

    ev = live(cues.frames, cues.frames_w)[:, None] * (cues.frames @ C.T - np.asarray(visual_baseline, np.float32))
    ev += live(cues.text, cues.text_w)[:, None] * centred(cues.text @ C.T)
    if len(cues.phrases):
        sp = centred(np.asarray(phrase_emb, np.float32) @ C.T)  # (P, K)
        w = cues.phrase_w.astype(np.float32)
        # evidence against (a negative weight): the classes it is about lose, the others gain nothing
        ev += np.maximum(w, 0) @ sp + np.minimum(w, 0) @ np.maximum(sp, 0)
    top = np.argsort(-ev, axis=1, kind="stable")[:, :k]
    e = np.take_along_axis(ev, top, axis=1)
    score = np.where(e > 0, e / (e + EVIDENCE_HALF), 0.0).astype(np.float32)
    ok = (score >= threshold) & (e >= SECOND_CLASS_SHARE * e[:, :1])
    return top, score, np.cumprod(ok, axis=1).astype(bool)


def cue_table(cue_rows: Sequence[Sequence[dict]], frames: Sequence[Optional[np.ndarray]],
              texts: Sequence[Optional[np.ndarray]], dim: int) -> CueTable:
    """A ``CueTable`` from each segment's stored ``cues`` (kind, phrase, weight) and its
    frames and transcript vectors (None where absent)."""
    n = len(cue_rows)
    phrases = sorted({c["phrase"] for row in cue_rows for c in row if c["kind"] == PHRASE_CUE})
    col = {p: j for j, p in enumerate(phrases)}
    frames_w, text_w = np.zeros(n, np.float32), np.zeros(n, np.float32)
    phrase_w = np.zeros((n, len(phrases)), np.float32)
    for i, row in enumerate(cue_rows):
        for c in row:
            if c["kind"] == FRAMES_CUE:
                frames_w[i] += c["weight"]
            elif c["kind"] == TEXT_CUE:
                text_w[i] += c["weight"]
            else:
                phrase_w[i, col[c["phrase"]]] += c["weight"]

    def stack(vs) -> np.ndarray:
        out = np.zeros((n, dim), np.float32)
        for i, v in enumerate(vs):
            if v is not None:
                out[i] = v
        return out

    return CueTable(stack(frames), frames_w, stack(texts), text_w, phrases, phrase_w)
