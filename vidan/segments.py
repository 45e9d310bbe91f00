"""Segment plans: where one video is cut into the segments a report has rows for.

Pure logic: times in, ``Segment`` lists out. No media library, model or Ray here, so
every rule below is property-tested with made-up cuts and words.

Plans (``SegmentConfig.plan``):

``fixed``
    Windows of ``window_s``. A remainder shorter than ``min(min_s, window_s) / 2``
    joins the window before it. Cuts and words are ignored.
``shots``
    A boundary at every cut. Shots shorter than ``min_s`` are merged into a neighbour
    (see *Merging*), then shots longer than ``max_s`` are split evenly into pieces of at
    most ``max_s``.
``shots+speech``
    Like ``shots``, but no boundary ever falls inside a spoken word. A cut that falls
    inside a word moves to the nearest pause within ``pause_search_s``; without one it
    moves to the nearer edge of that word (so it is displaced by at most half the
    word). Length splits are placed in pauses near their even positions too.

Guarantees (``tests/test_segments.py`` checks them with hypothesis):

* segments tile ``[0, duration_s]``: the first starts at 0.0, the last ends at exactly
  ``duration_s``, each ends where the next starts, none is empty;
* in ``shots`` and ``shots+speech`` no segment is longer than ``max_s``; in
  ``shots+speech`` this holds as long as no single word is longer than ``max_s``
  (a length split is never put inside a word, so a longer "word" wins and its
  segment ends at the word's end);
* with more than one segment, ``shots`` segments are at least ``min(min_s, max_s / 2)``;
* in ``shots+speech`` every word lies entirely inside one segment;
* the same input gives the same plan.

Merging: a too-short segment loses its weaker boundary. Hard cuts and fades rank
above speech pauses and length splits; between two cuts the higher ``Cut.score``
wins. On a tie the short segment joins its shorter neighbour.

Reasons: a cut keeps ``"shot_cut"``/``"fade"`` even when speech moved it (it is
still the cut, at most ``pause_search_s`` away); a length split is ``"speech_pause"``
when it sits in a gap between two words, else ``"length_limit"``.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import Optional, Sequence

from vidan.config import SegmentConfig
from vidan.records import Cut, Segment, Span, Word

EPS = 1e-6  # boundaries closer than this (seconds) are the same boundary
# A boundary moved into a long silence stops this far from the word it leaves; shorter
# gaps are cut in their middle. Word times from ASR are only good to ~0.1-0.2 s.
PAUSE_MARGIN_S = 0.3

_RANK = {"shot_cut": 2, "fade": 2, "speech_pause": 1, "length_limit": 0, "window": 0}


@dataclass(frozen=True)
class _Boundary:
    t: float
    reason: str
    score: float = 0.0

    @property
    def strength(self) -> tuple[int, float]:
        return (_RANK.get(self.reason, 0), self.score)


def plan_segments(duration_s: float, cfg: SegmentConfig, cuts: Sequence[Cut] = (), words: Sequence[Word] = (),
                  frame_times: Sequence[float] = ()) -> list[Segment]:
    """Cut ``[0, duration_s]`` into segments by ``cfg.plan``; see the module docstring.

    ``cuts`` and ``words`` may be unsorted, duplicated or reach outside the video;
    non-finite times are ignored. ``frame_times`` only choose each segment's keyframe.
    Raises ``ValueError`` when ``duration_s`` is not a positive finite number.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive finite number, got {duration_s!r}")
    duration_s = float(duration_s)
    cfg.validate()
    if cfg.plan == "fixed":
        bounds = _fixed_boundaries(duration_s, cfg)
    elif duration_s < cfg.min_s:
        bounds = []
    else:
        speech = _Speech(words, duration_s) if cfg.plan == "shots+speech" else _Speech((), duration_s)
        bounds = _shot_boundaries(duration_s, cfg, cuts, speech)
    return _to_segments(duration_s, bounds, frame_times)


def words_in(segment: Segment | Span, words: Sequence[Word]) -> list[Word]:
    """The words whose midpoint lies in ``[start, end)`` of ``segment``.

    Segments of one plan tile the video, so every word whose midpoint is inside the
    video belongs to exactly one of them. A word that ASR placed at or past the end
    belongs to none; callers that want it can widen the last span to ``math.inf``.
    """
    a, b = segment.start_s, segment.end_s
    return [w for w in words if a <= (w.start_s + w.end_s) / 2 < b]


def boundary_cuts_word(boundaries: Sequence[float], words: Sequence[Word]) -> int:
    """How many words have a boundary strictly inside them (the benchmark's word-split count)."""
    bs = sorted(boundaries)
    n = 0
    for w in words:
        i = bisect.bisect_right(bs, w.start_s)
        if i < len(bs) and bs[i] < w.end_s:
            n += 1
    return n


def plan_parts(duration_s: float, part_s: float) -> list[Span]:
    """Split ``[0, duration_s]`` into parts of ``part_s`` for parallel decoding.

    A last remainder shorter than ``part_s / 4`` joins the part before it, so no part is
    tiny; the parts tile the duration exactly.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive finite number, got {duration_s!r}")
    if not (math.isfinite(part_s) and part_s > 0):
        raise ValueError(f"part_s must be a positive finite number, got {part_s!r}")
    edges = _regular_edges(float(duration_s), float(part_s), part_s / 4)
    return [Span(a, b) for a, b in zip(edges, edges[1:])]


def with_context(span: Span, duration_s: float, margin_s: float) -> Span:
    """``span`` widened by ``margin_s`` on each side, kept inside ``[0, duration_s]``.

    A part is decoded with this context so speech cut by its edges is heard whole;
    what the context yields belongs to the neighbouring part (``vidan.assemble``).
    """
    if not (math.isfinite(margin_s) and margin_s >= 0):
        raise ValueError(f"margin_s must be a non-negative finite number, got {margin_s!r}")
    return Span(max(0.0, span.start_s - margin_s), max(span.end_s, min(float(duration_s), span.end_s + margin_s)))


# --- plans ------------------------------------------------------------------------


def _regular_edges(duration: float, step: float, min_tail: float) -> list[float]:
    n = max(1, math.ceil(duration / step - EPS))
    # Multiply rather than accumulate so long videos do not drift.
    edges = [k * step for k in range(n)] + [duration]
    if len(edges) > 2 and (duration - edges[-2] < min_tail or duration - edges[-2] <= EPS):
        del edges[-2]
    return edges


def _fixed_boundaries(duration: float, cfg: SegmentConfig) -> list[_Boundary]:
    edges = _regular_edges(duration, cfg.window_s, min(cfg.min_s, cfg.window_s) / 2)
    return [_Boundary(t, "window") for t in edges[1:-1]]


def _shot_boundaries(duration: float, cfg: SegmentConfig, cuts: Sequence[Cut], speech: "_Speech") -> list[_Boundary]:
    bounds = []
    for c in cuts:
        if not math.isfinite(c.t_s):
            continue
        reason = "fade" if c.kind == "fade" else "shot_cut"
        b = _Boundary(float(c.t_s), reason, float(c.score) if math.isfinite(c.score) else 0.0)
        moved = speech.place_cut(b.t, cfg.pause_search_s)
        if moved is not None:
            bounds.append(_Boundary(moved, b.reason, b.score))
    bounds = _dedupe(bounds, duration)
    bounds = _merge_short(bounds, duration, cfg.min_s)
    return _split_long(bounds, duration, cfg, speech)


def _dedupe(bounds: list[_Boundary], duration: float) -> list[_Boundary]:
    """Sort, drop boundaries at the ends, and keep the strongest of near-equal ones."""
    out: list[_Boundary] = []
    # The reason breaks ties so the plan does not depend on the order cuts arrive in.
    for b in sorted(bounds, key=lambda b: (b.t, b.strength, b.reason)):
        if b.t <= EPS or b.t >= duration - EPS:
            continue
        if out and b.t - out[-1].t <= EPS:
            if (b.strength, b.reason) > (out[-1].strength, out[-1].reason):
                out[-1] = _Boundary(out[-1].t, b.reason, b.score)
            continue
        out.append(b)
    return out


def _merge_short(bounds: list[_Boundary], duration: float, min_s: float) -> list[_Boundary]:
    """Remove boundaries until every segment is at least ``min_s`` (or one is left).

    Shortest segment first, so a run of slivers collapses into one before it is
    weighed against its neighbours. Linked list plus a lazy heap: O(n log n).
    """
    t = [0.0] + [b.t for b in bounds] + [duration]
    strength = [(9, 0.0)] + [b.strength for b in bounds] + [(9, 0.0)]
    last = len(t) - 1
    prev = list(range(-1, last))
    nxt = list(range(1, last + 2))
    alive = [True] * len(t)
    heap = [(t[i + 1] - t[i], t[i], i) for i in range(last)]
    heapq.heapify(heap)
    n_segments = last
    while heap and n_segments > 1:
        length, _, i = heapq.heappop(heap)
        if not alive[i] or i == last or t[nxt[i]] - t[i] != length:
            continue  # stale entry
        if length >= min_s:
            break
        j = nxt[i]
        if i == 0:
            drop = j
        elif j == last:
            drop = i
        elif strength[i] != strength[j]:
            drop = i if strength[i] < strength[j] else j
        else:
            left_len = t[i] - t[prev[i]]
            right_len = t[nxt[j]] - t[j]
            drop = i if left_len <= right_len else j
        p, q = prev[drop], nxt[drop]
        nxt[p], prev[q] = q, p
        alive[drop] = False
        n_segments -= 1
        heapq.heappush(heap, (t[q] - t[p], t[p], p))
    return [b for k, b in enumerate(bounds, start=1) if alive[k]]


def _split_long(bounds: list[_Boundary], duration: float, cfg: SegmentConfig, speech: "_Speech") -> list[_Boundary]:
    edges = [0.0] + [b.t for b in bounds] + [duration]
    out: list[_Boundary] = []
    for k, (a, c) in enumerate(zip(edges, edges[1:])):
        if k > 0:
            out.append(bounds[k - 1])
        pos = a
        while c - pos > cfg.max_s + EPS:
            q = _split_point(pos, c, cfg, speech)
            if q is None:
                break  # one word longer than max_s runs to the end of the segment
            reason = "speech_pause" if speech.between_words(q) else "length_limit"
            out.append(_Boundary(q, reason))
            pos = q
    return out


def _split_point(pos: float, c: float, cfg: SegmentConfig, speech: "_Speech") -> Optional[float]:
    """Where to end the piece that starts at ``pos`` inside a segment ending at ``c``.

    Aim at an even share of what is left, then relax step by step: a pause near the aim,
    a word edge near the aim, anything word-safe keeping both sides >= min_s, anything
    word-safe keeping this piece <= max_s, and last the first word-safe time after that
    (only when a single word longer than ``max_s`` leaves no other choice).
    """
    rest = c - pos
    n = math.ceil(rest / cfg.max_s - EPS)
    aim = pos + rest / n
    lo = min(cfg.min_s, rest / 2)
    hard_hi = min(pos + cfg.max_s, c - EPS)
    safe_lo, safe_hi = pos + lo, min(hard_hi, c - lo)
    win_lo, win_hi = max(safe_lo, aim - cfg.pause_search_s), min(safe_hi, aim + cfg.pause_search_s)
    for lo_, hi_, pauses_only in ((win_lo, win_hi, True), (win_lo, win_hi, False),
                                  (safe_lo, safe_hi, False), (pos + 2 * EPS, hard_hi, False),
                                  (hard_hi, c - 2 * EPS, False)):
        if lo_ <= hi_:
            q = speech.nearest_allowed(aim, lo_, hi_, pauses_only)
            if q is not None and pos + EPS < q < c - EPS:
                return q
    return None


# --- speech -------------------------------------------------------------------------


class _Speech:
    """Word intervals and the pauses between them, for placing boundaries."""

    def __init__(self, words: Sequence[Word], duration: float):
        spans = sorted((max(0.0, w.start_s), min(duration, w.end_s)) for w in words
                       if math.isfinite(w.start_s) and math.isfinite(w.end_s))
        merged: list[list[float]] = []
        for s, e in spans:
            if e <= s:
                continue  # a zero-length word cannot be split
            if merged and s < merged[-1][1]:  # overlapping words act as one; touching ones stay apart
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.duration = duration
        self.words = [(s, e) for s, e in merged]
        self.starts = [s for s, _ in self.words]
        gaps = []
        prev_end = 0.0
        for s, e in self.words:
            if s > prev_end:
                gaps.append((prev_end, s))
            prev_end = e
        if self.words and duration > prev_end:
            gaps.append((prev_end, duration))
        self.gaps = gaps
        self.gap_starts = [g0 for g0, _ in gaps]

    def containing(self, x: float) -> Optional[tuple[float, float]]:
        i = bisect.bisect_right(self.starts, x) - 1
        if i >= 0 and self.words[i][0] < x < self.words[i][1]:
            return self.words[i]
        return None

    def between_words(self, x: float) -> bool:
        i = bisect.bisect_right(self.gap_starts, x) - 1
        if i < 0:
            return False
        g0, g1 = self.gaps[i]
        return g0 <= x <= g1 and g0 > 0.0 and g1 < self.duration

    def place_cut(self, x: float, search_s: float) -> Optional[float]:
        """Where a cut at ``x`` may go: ``x`` itself unless it is inside a word; else the
        nearest point between two words (a pause, or the edge of the word it hits) within
        ``search_s``; ``None`` when the only such point is the start or end of the video.

        The nearest word edge, not the nearest long pause: the picture changes at ``x``,
        so the boundary should stay as close to it as it can without splitting a word.
        """
        word = self.containing(x)
        if word is None:
            return x
        q = self.nearest_allowed(x, max(EPS, x - search_s), min(self.duration - EPS, x + search_s), False)
        if q is not None:
            return q
        edges = sorted((e for e in word if EPS < e < self.duration - EPS), key=lambda e: (abs(e - x), e))
        return edges[0] if edges else None

    def nearest_allowed(self, x: float, lo: float, hi: float, pauses_only: bool) -> Optional[float]:
        """The word-safe time in ``[lo, hi]`` nearest ``x``: a pause point, or with
        ``pauses_only=False`` a pause point or a word edge. Ties go to the earlier time."""
        if not self.words:
            return min(max(x, lo), hi)
        best: Optional[float] = None

        def consider(p: float) -> None:
            nonlocal best
            if lo <= p <= hi and (best is None or (abs(p - x), p) < (abs(best - x), best)):
                best = p

        # Only gaps overlapping [lo, hi] can hold a candidate; they are sorted by start.
        i = max(0, bisect.bisect_right(self.gap_starts, lo) - 1)
        while i < len(self.gaps) and self.gaps[i][0] <= hi:
            g0, g1 = self.gaps[i]
            a0, a1 = max(lo, g0), min(hi, g1)
            if a0 <= a1:
                # The gap's own cut point, pulled into the window if the window clips the gap.
                consider(min(max(_pause_point(self.gaps[i], min(max(x, lo), hi)), a0), a1))
            i += 1
        if pauses_only:
            return best
        i = max(0, bisect.bisect_right(self.starts, lo) - 1)
        while i < len(self.words) and self.words[i][0] <= hi:
            for e in self.words[i]:
                consider(e)
            i += 1
        return best


def _pause_point(gap: tuple[float, float], x: float) -> float:
    """Where to cut in ``gap`` for a boundary wanted at ``x``: ``x`` itself when it is well
    inside, else as close as possible while keeping ``PAUSE_MARGIN_S`` from the words
    (the middle, for a short gap)."""
    g0, g1 = gap
    m = min(PAUSE_MARGIN_S, (g1 - g0) / 2)
    return min(max(x, g0 + m), g1 - m)


# --- output -----------------------------------------------------------------------


def _to_segments(duration: float, bounds: list[_Boundary], frame_times: Sequence[float]) -> list[Segment]:
    bounds = _dedupe(bounds, duration)
    starts = [(0.0, "start")] + [(b.t, b.reason) for b in bounds]
    ends = [b.t for b in bounds] + [duration]
    frames = sorted(float(f) for f in frame_times if math.isfinite(f))
    return [Segment(index=i, start_s=s, end_s=e, reason=r, keyframe_s=_keyframe(s, e, frames, e == duration))
            for i, ((s, r), e) in enumerate(zip(starts, ends))]


def _keyframe(start: float, end: float, frames: list[float], closed: bool) -> float:
    """The frame time nearest the middle of [start, end) that lies inside it, else the middle."""
    mid = (start + end) / 2
    i = bisect.bisect_left(frames, mid)
    candidates = []
    if i < len(frames) and (frames[i] < end or (closed and frames[i] <= end)):
        candidates.append(frames[i])
    if i > 0 and frames[i - 1] >= start:
        candidates.append(frames[i - 1])
    if not candidates:
        return mid
    return min(candidates, key=lambda f: (abs(f - mid), f))
