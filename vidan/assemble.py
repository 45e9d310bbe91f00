"""Put one video's part results together: plan its segments and gather their features.

Pure logic over ``FramePart``/``AudioPart`` (numpy only). The models that turn these
features into embeddings and tags are applied by ``vidan.stages.FinishStage``.

Audio parts overlap: each is heard with ``PART_CONTEXT_S`` of context on both sides,
so a word cut by a part boundary is whole in both transcripts. An ``AudioPart`` keeps
every word it heard, context included; everything else it carries (voice activity,
loudness, acoustic features, decoded seconds) covers its own span only, so nothing is
counted twice. ``stitch_words`` joins neighbouring transcripts where neither heard a
word, so each word is kept exactly once.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from vidan.config import Config
from vidan.records import AudioPart, Box, Cut, FramePart, MediaInfo, Segment, Span, Word
from vidan.segments import EPS, plan_segments, words_in
from vidan.wer import normalise_words

# Context decoded on each side of an audio part (by ``vidan.stages.AudioStage``).
PART_CONTEXT_S = 5.0
# Two overlapping transcripts are joined within this distance of the part boundary: far
# enough inside both parts' audio that neither heard it cut off at an edge.
JOIN_SEARCH_S = 2.5
# A pause this long is as good a joint as any; shorter ones are taken only when needed.
_GOOD_PAUSE_S = 0.3
# One word heard by both parts: its two time estimates differ by less than this.
_SAME_WORD_S = 0.5


@dataclass
class SegmentFeatures:
    segment: Segment
    frame_times: np.ndarray  # times of the sampled frames used for this segment
    mean_probs: Optional[np.ndarray]  # None: no frame (no video stream, or decoding failed here)
    transcript: Optional[str]  # None: no audio / ASR off; "" listened and nothing was said
    words: Optional[list[Word]]
    language: Optional[str]
    language_probability: Optional[float]
    no_speech_prob: Optional[float]
    speech_ratio: Optional[float]
    loudness_db: Optional[float]
    acoustic: Optional[np.ndarray]
    # What the detectors saw (None: not run, or no frame): faces and person score are the
    # most in any of the segment's frames the detectors looked at; the boxes are those of
    # the looked-at frame nearest the keyframe (within ``detect.every_s`` of it).
    n_faces: Optional[int] = None
    person: Optional[float] = None
    boxes: Optional[list[Box]] = None
    # (n_event_classes,) mean sound-event scores over the segment's hops (None: not run)
    events: Optional[np.ndarray] = None
    # Whisper's own language guess, beside the final choice in ``language``
    detected_language: Optional[str] = None
    detected_probability: Optional[float] = None


@dataclass
class VideoParts:
    """Everything the parts of one video produced; failed parts are simply absent."""

    info: MediaInfo
    frames: list[FramePart] = field(default_factory=list)
    audio: list[AudioPart] = field(default_factory=list)
    transcribed: bool = False  # ASR ran on the audio (False: no audio, or --asr none)

    @property
    def cuts(self) -> list[Cut]:
        return sorted((c for p in self.frames for c in p.cuts), key=lambda c: c.t_s)

    @property
    def words(self) -> list[Word]:
        return stitch_words(self.audio, self.info.duration_s)

    @property
    def frame_times(self) -> np.ndarray:
        if not self.frames:
            return np.zeros(0)
        return np.concatenate([p.times_s for p in self.frames])

    @property
    def frame_probs(self) -> Optional[np.ndarray]:
        if not self.frames:
            return None
        return np.concatenate([p.probs for p in self.frames]).astype(np.float32)

    def detections(self) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[list[list[Box]]]]:
        """(faces, person scores, boxes) per sampled frame, each None unless every part has it."""
        def cat(name):
            vals = [getattr(p, name) for p in self.frames]
            if not vals or any(v is None for v in vals):
                return None
            return [x for v in vals for x in v] if name == "boxes" else np.concatenate([np.asarray(v) for v in vals])
        return cat("faces"), cat("people"), cat("boxes")

    def detected_language(self) -> tuple[Optional[str], Optional[float]]:
        """Whisper's own guess, by the same word-count vote as ``language``."""
        return self._vote("detected_language", "detected_probability")

    def language(self) -> tuple[Optional[str], Optional[float]]:
        """The language of the parts that had speech, weighted by their word count.
        Hesitations do not count: a film whose only words are Whisper's "Hmm." has no
        language (``detected_language`` still gives Whisper's guess)."""
        from vidan.tags import is_filler

        return vote_language(self.audio, "language", "language_probability", said=lambda w: not is_filler(w.text))

    def _vote(self, field: str, probability: str) -> tuple[Optional[str], Optional[float]]:
        return vote_language(self.audio, field, probability)


def vote_language(parts: Sequence[AudioPart], field: str = "language", probability: str = "language_probability",
                  said: Optional[Callable[[Word], bool]] = None) -> tuple[Optional[str], Optional[float]]:
    """The language (``field``) most words were heard in, over parts with words, and the
    highest ``probability`` a part gave it. ``said``: which words count (default all)."""
    votes: Counter = Counter()
    prob: dict[str, float] = {}
    for p in parts:
        lang = getattr(p, field)
        words = p.words or []
        n = len(words) if said is None else sum(1 for w in words if said(w))
        if lang and n:
            votes[lang] += n
            prob[lang] = max(prob.get(lang, 0.0), getattr(p, probability) or 0.0)
    if not votes:
        return None, None
    lang = votes.most_common(1)[0][0]
    return lang, prob[lang]


def stitch_words(parts: Sequence[AudioPart], duration_s: float) -> list[Word]:
    """The words of overlapping audio parts, each kept once, in time order.

    Between two neighbouring parts the joint is a time that no word of either part
    straddles, near the boundary (a pause both heard); each part gives the words whose
    midpoint lies on its side. In speech without such a pause, the two transcripts are
    joined at a word both heard at the same time, kept once; failing that, at the
    boundary by midpoint. A part whose neighbour failed keeps the words of its own span.
    """
    parts = sorted(parts, key=lambda p: p.span.start_s)
    lo = [p.span.start_s for p in parts]
    hi = [p.span.end_s for p in parts]
    if parts and parts[0].span.start_s <= EPS:
        lo[0] = -math.inf
    if parts and parts[-1].span.end_s >= duration_s - EPS:
        hi[-1] = math.inf  # ASR may place the last word a little past the end
    for i in range(len(parts) - 1):
        t0 = parts[i].span.end_s
        if abs(parts[i + 1].span.start_s - t0) <= EPS:
            # within half of each neighbour, so the joints of a short part never cross
            reach = min(JOIN_SEARCH_S, parts[i].span.duration_s / 2, parts[i + 1].span.duration_s / 2)
            hi[i], lo[i + 1] = _joint(parts[i].words, parts[i + 1].words, t0, reach)
    out = [w for p, a, b in zip(parts, lo, hi) for w in p.words if a <= _mid(w) < b]
    return sorted(out, key=lambda w: (w.start_s, w.end_s))


def _mid(w: Word) -> float:
    return (w.start_s + w.end_s) / 2


def _joint(before: Sequence[Word], after: Sequence[Word], t0: float, reach: float) -> tuple[float, float]:
    """(end of what ``before`` keeps, start of what ``after`` keeps), as word midpoints
    within ``reach`` of ``t0``."""
    lo_w, hi_w = t0 - reach, t0 + reach
    spans = sorted((w.start_s, w.end_s) for w in (*before, *after) if w.end_s > lo_w and w.start_s < hi_w)
    free = []
    x = lo_w
    for a, b in spans:
        if a >= x:
            free.append((x, min(a, hi_w)))
        x = max(x, b)
    if x <= hi_w:
        free.append((x, hi_w))
    if free:
        def rank(gap):
            a, b = gap
            return (min(b - a, _GOOD_PAUSE_S), -max(a - t0, t0 - b, 0.0))

        a, b = max(free, key=rank)
        edge = min(0.1, (b - a) / 2)
        t = min(max(t0, a + edge), b - edge)
        return t, t
    # No pause: find one word both heard, nearest the boundary, and keep it once.
    near_before = [w for w in before if lo_w <= _mid(w) <= hi_w]
    near_after = [w for w in after if lo_w <= _mid(w) <= hi_w]
    # a word said twice in a row ("no, no") pairs with its own reading, the nearest one
    pairs = [(abs(_mid(u) - t0), abs(_mid(u) - _mid(v)), _mid(u), _mid(v)) for u in near_before for v in near_after
             if abs(_mid(u) - _mid(v)) < _SAME_WORD_S and normalise_words(u.text) == normalise_words(v.text)
             and normalise_words(u.text)]
    if pairs:
        _, _, mu, mv = min(pairs)
        return math.nextafter(mu, math.inf), math.nextafter(mv, math.inf)
    return t0, t0


def gather(parts: VideoParts, cfg: Config) -> list[SegmentFeatures]:
    info = parts.info
    times = parts.frame_times
    probs = parts.frame_probs
    words = parts.words
    segments = plan_segments(info.duration_s, cfg.segments, cuts=parts.cuts if parts.frames else (),
                             words=words, frame_times=times)
    language, language_p = parts.language()
    detected, detected_p = parts.detected_language()
    faces, people, boxes = parts.detections()
    if faces is not None and len(faces) != len(times) or people is not None and len(people) != len(times):
        faces = people = None  # a part that lost frames: counts no longer line up with times
    if boxes is not None and len(boxes) != len(times):
        boxes = faces = people = None
    # the frames the detectors looked at (``detect.every_s``): a segment takes the ones
    # inside it, or the nearest one
    looked = np.flatnonzero([b is not None for b in boxes]) if boxes is not None else np.zeros(0, np.int64)
    speech = [s for p in parts.audio for s in p.speech]
    out = []
    for seg in segments:
        span = Span(seg.start_s, seg.end_s)
        idx = _frames_for(times, span)
        didx = looked[_frames_for(times[looked], span)] if len(looked) else looked
        mean_probs = probs[idx].mean(axis=0) if probs is not None and len(idx) else None
        if parts.audio:
            seg_words = words_in(seg, words)
            transcript = _join(seg_words) if parts.transcribed else None
            speech_ratio = _covered(speech, span) / max(span.duration_s, 1e-9)
            loud = _loudness(parts.audio, span)
            acoustic = _acoustic(parts.audio, span)
            nsp = _no_speech(parts.audio, span)
        else:
            seg_words, transcript, speech_ratio, loud, acoustic, nsp = None, None, None, None, None, None
        out.append(SegmentFeatures(
            segment=seg, frame_times=times[idx] if len(times) else times, mean_probs=mean_probs,
            transcript=transcript, words=seg_words if parts.transcribed else None,
            language=language if transcript else None,
            language_probability=language_p if transcript else None,
            no_speech_prob=nsp, speech_ratio=speech_ratio, loudness_db=loud, acoustic=acoustic,
            n_faces=int(faces[didx].max()) if faces is not None and len(didx) else None,
            person=float(people[didx].max()) if people is not None and len(didx) else None,
            boxes=list(boxes[_keyframe(times, didx, seg)]) if len(didx) else None,
            events=_events(parts.audio, span) if parts.audio else None,
            detected_language=detected if transcript else None,
            detected_probability=detected_p if transcript else None,
        ))
    return out


def _frames_for(times: np.ndarray, span: Span) -> np.ndarray:
    """Indices of the sampled frames inside ``span``; the nearest one if none falls inside.

    Short segments (a 0.4 s shot at 1 frame a second) still get a picture, the one
    closest to their middle.
    """
    if len(times) == 0:
        return np.zeros(0, dtype=int)
    inside = np.nonzero((times >= span.start_s) & (times < span.end_s))[0]
    if len(inside):
        return inside
    mid = (span.start_s + span.end_s) / 2
    return np.array([int(np.argmin(np.abs(times - mid)))])


def _keyframe(times: np.ndarray, idx: np.ndarray, seg: Segment) -> int:
    """The index of the segment's frame nearest its keyframe time (its middle without one)."""
    t = seg.keyframe_s if seg.keyframe_s is not None else (seg.start_s + seg.end_s) / 2
    return int(idx[np.argmin(np.abs(times[idx] - t))])


def _events(parts: Sequence[AudioPart], span: Span) -> Optional[np.ndarray]:
    """Mean sound-event scores over the hops inside ``span`` (None: no part has events there)."""
    rows = []
    for p in parts:
        if p.events is None or not len(p.events) or p.span.overlap(span) <= 0:
            continue
        hop = p.events_hop_s
        a = int((max(span.start_s, p.span.start_s) - p.span.start_s) // hop)
        b = int(np.ceil((min(span.end_s, p.span.end_s) - p.span.start_s) / hop))
        got = np.asarray(p.events[a:max(b, a + 1)], np.float32)
        if len(got):
            rows.append(got)
    if not rows:
        return None
    return np.concatenate(rows).mean(axis=0)


def _join(words: Sequence[Word]) -> str:
    text = "".join(w.text if w.text.startswith(" ") else " " + w.text for w in words)
    return " ".join(text.split())


def _covered(spans: Sequence[Span], span: Span) -> float:
    return sum(s.overlap(span) for s in spans)


def _hop_slice(part: AudioPart, n: int, span: Span) -> slice:
    hop = part.loudness_hop_s
    a = int(np.floor((max(span.start_s, part.span.start_s) - part.span.start_s) / hop))
    b = int(np.ceil((min(span.end_s, part.span.end_s) - part.span.start_s) / hop))
    return slice(max(a, 0), min(max(b, a + 1), n))


def _loudness(parts: Sequence[AudioPart], span: Span) -> Optional[float]:
    vals = []
    for p in parts:
        if p.span.overlap(span) > 0 and len(p.loudness_db):
            vals.append(p.loudness_db[_hop_slice(p, len(p.loudness_db), span)])
    if not vals:
        return None
    db = np.concatenate(vals).astype(np.float64)
    if not len(db):
        return None
    # mean power, not mean dB: one loud second should dominate nine silent ones
    return float(10 * np.log10(np.mean(10 ** (db / 10)) + 1e-12))


def _acoustic(parts: Sequence[AudioPart], span: Span) -> Optional[np.ndarray]:
    vals = []
    for p in parts:
        if p.acoustic is not None and len(p.acoustic) and p.span.overlap(span) > 0:
            hop = p.acoustic_hop_s
            a = int((max(span.start_s, p.span.start_s) - p.span.start_s) // hop)
            b = int(np.ceil((min(span.end_s, p.span.end_s) - p.span.start_s) / hop))
            rows = p.acoustic[a:max(b, a + 1)]
            if len(rows):  # none where the audio track ended before the span
                vals.append(rows)
    if not vals:
        return None
    v = np.concatenate(vals).mean(axis=0)
    n = np.linalg.norm(v)
    return (v / n).astype(np.float32) if n > 0 else None


def _no_speech(parts: Sequence[AudioPart], span: Span) -> Optional[float]:
    vals = [p.no_speech_prob for p in parts if p.no_speech_prob is not None and p.span.overlap(span) > 0]
    return float(max(vals)) if vals else None
