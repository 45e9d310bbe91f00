"""Segment plans: tiling, length bounds and word safety, for any cuts and words."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from vidan.config import ConfigError, SegmentConfig
from vidan.records import Cut, Segment, Span, Word
from vidan.segments import boundary_cuts_word, plan_parts, plan_segments, words_in

PLANS = ("fixed", "shots", "shots+speech")
EPS = 1e-6

durations = st.floats(min_value=0.01, max_value=400.0, allow_nan=False)


@st.composite
def cut_lists(draw, duration: float) -> list[Cut]:
    """Cuts anywhere, at the ends, duplicated, very close together, unsorted."""
    base = draw(st.lists(st.floats(min_value=0.0, max_value=duration), max_size=30))
    base += draw(st.lists(st.sampled_from([0.0, duration]), max_size=2))
    close = [t + draw(st.floats(min_value=0.0, max_value=0.05)) for t in base[:5]]
    times = base + close + base[:3]  # exact duplicates
    times = [t for t in times if t <= duration]
    draw(st.randoms(use_true_random=False)).shuffle(times)
    kinds = draw(st.lists(st.sampled_from(["cut", "fade"]), min_size=len(times), max_size=len(times)))
    scores = draw(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=len(times), max_size=len(times)))
    return [Cut(t, k, s) for t, k, s in zip(times, kinds, scores)]


@st.composite
def word_lists(draw, duration: float, max_word_s: float = 2.0) -> list[Word]:
    """Non-overlapping words in [0, duration]; gaps may be zero (touching words)."""
    words = []
    t = draw(st.floats(min_value=0.0, max_value=3.0))
    while True:
        length = draw(st.floats(min_value=0.05, max_value=max_word_s))
        if t + length > duration or len(words) >= 120:
            break
        words.append(Word(t, t + length, f"w{len(words)}"))
        t += length + draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0)))
    return words


@st.composite
def configs(draw, plan: str) -> SegmentConfig:
    min_s = draw(st.floats(min_value=0.2, max_value=5.0))
    max_s = draw(st.floats(min_value=min_s, max_value=60.0))
    return SegmentConfig(plan=plan, window_s=draw(st.floats(min_value=0.5, max_value=30.0)), min_s=min_s,
                         max_s=max_s, pause_search_s=draw(st.floats(min_value=0.0, max_value=3.0)))


def assert_tiles(segs: list[Segment], duration: float) -> None:
    assert segs, "a positive duration always has a segment"
    assert segs[0].start_s == 0.0
    assert segs[-1].end_s == duration
    for i, s in enumerate(segs):
        assert s.index == i
        assert s.end_s > s.start_s
        assert s.keyframe_s is not None and s.start_s <= s.keyframe_s <= s.end_s
    for a, b in zip(segs, segs[1:]):
        assert a.end_s == b.start_s
    assert segs[0].reason == "start"
    assert all(s.reason != "start" for s in segs[1:])


def assert_no_word_split(segs: list[Segment], words: list[Word]) -> None:
    for w in words:
        owners = [s for s in segs if s.start_s - EPS <= w.start_s and w.end_s <= s.end_s + EPS]
        assert owners, f"{w} is split by a boundary in {[(s.start_s, s.end_s) for s in segs]}"


@settings(max_examples=200, deadline=None)
@given(data=st.data(), duration=durations, plan=st.sampled_from(PLANS))
def test_every_plan_tiles_the_video(data, duration, plan):
    cfg = data.draw(configs(plan))
    cuts = data.draw(cut_lists(duration))
    words = data.draw(word_lists(duration))
    frames = data.draw(st.lists(st.floats(min_value=-1.0, max_value=duration + 1.0), max_size=50))
    segs = plan_segments(duration, cfg, cuts, words, frames)
    assert_tiles(segs, duration)
    # Deterministic, and independent of the order cuts arrive in.
    assert plan_segments(duration, cfg, list(reversed(cuts)), words, frames) == segs
    # Every word's midpoint lies in exactly one half-open segment, whatever the plan:
    # counted here from the segment edges alone, not with the code's own words_in.
    for w in words:
        mid = (w.start_s + w.end_s) / 2
        assert sum(1 for s in segs if s.start_s <= mid < s.end_s) == 1, (w, [(s.start_s, s.end_s) for s in segs])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), duration=st.floats(min_value=0.5, max_value=400.0))
def test_shots_plan_bounds_segment_length(data, duration):
    cfg = data.draw(configs("shots"))
    cuts = data.draw(cut_lists(duration))
    segs = plan_segments(duration, cfg, cuts)
    assert_tiles(segs, duration)
    for s in segs:
        assert s.end_s - s.start_s <= cfg.max_s + EPS
        if len(segs) > 1:
            assert s.end_s - s.start_s >= min(cfg.min_s, cfg.max_s / 2) - EPS
    # A cut that survived is exactly at a detected cut time; the rest are even length splits.
    cut_times = {c.t_s for c in cuts}
    for s in segs[1:]:
        assert (s.start_s in cut_times) == (s.reason in ("shot_cut", "fade"))


@settings(max_examples=250, deadline=None)
@given(data=st.data(), duration=st.floats(min_value=0.5, max_value=400.0))
def test_shots_speech_never_splits_a_word(data, duration):
    cfg = data.draw(configs("shots+speech"))
    cuts = data.draw(cut_lists(duration))
    # Words stay shorter than max_s: a "word" longer than max_s is the documented exception.
    words = data.draw(word_lists(duration, max_word_s=min(2.0, cfg.max_s * 0.99)))
    segs = plan_segments(duration, cfg, cuts, words)
    assert_tiles(segs, duration)
    assert_no_word_split(segs, words)
    assert boundary_cuts_word([s.start_s for s in segs[1:]], words) == 0
    for s in segs:
        assert s.end_s - s.start_s <= cfg.max_s + EPS


@settings(max_examples=150, deadline=None)
@given(data=st.data(), duration=st.floats(min_value=0.5, max_value=200.0))
def test_cut_moves_at_most_pause_search_to_a_pause(data, duration):
    """A cut inside a word lands in a pause within pause_search_s when one exists."""
    cfg = SegmentConfig(plan="shots+speech", min_s=0.2, max_s=1000.0, pause_search_s=1.5)
    words = data.draw(word_lists(duration, max_word_s=1.0))
    t = data.draw(st.floats(min_value=0.0, max_value=duration))
    segs = plan_segments(duration, cfg, [Cut(t)], words)
    assert_no_word_split(segs, words)
    if len(segs) == 2:
        assert abs(segs[1].start_s - t) <= max(cfg.pause_search_s, 0.5) + EPS  # words are <= 1 s


def test_cut_inside_a_word_moves_to_the_nearest_point_between_words():
    words = [Word(1.0, 1.4, "the"), Word(1.4, 2.0, "cat"), Word(2.6, 3.0, "sat"), Word(3.0, 3.5, "down")]
    cfg = SegmentConfig(plan="shots+speech", min_s=0.5, max_s=20.0, pause_search_s=1.5)
    segs = plan_segments(10.0, cfg, [Cut(1.8, "cut", 40.0)], words)
    # "cat" ends at 2.0: the nearest place that splits no word, 0.2 s from the picture cut
    assert [s.start_s for s in segs] == [0.0, pytest.approx(2.0)]
    assert segs[1].reason == "shot_cut"
    # The shots plan leaves the cut where the picture changes, inside "cat".
    shots = plan_segments(10.0, SegmentConfig(plan="shots", min_s=0.5), [Cut(1.8)], words)
    assert [s.start_s for s in shots] == [0.0, 1.8]


def test_cut_with_no_pause_in_reach_moves_to_the_word_edge():
    # Touching words: no pause anywhere; the cut goes to the nearer edge of its word.
    words = [Word(i * 0.5, (i + 1) * 0.5, f"w{i}") for i in range(40)]
    cfg = SegmentConfig(plan="shots+speech", min_s=0.5, max_s=100.0, pause_search_s=1.5)
    segs = plan_segments(20.0, cfg, [Cut(7.3)], words)
    assert [s.start_s for s in segs] == [0.0, 7.5]


def test_long_shot_split_prefers_pauses():
    # 50 s of speech, words of 0.8 s with 0.2 s pauses; one long shot.
    words = [Word(i + 0.0, i + 0.8, f"w{i}") for i in range(50)]
    cfg = SegmentConfig(plan="shots+speech", min_s=2.0, max_s=20.0, pause_search_s=1.5)
    segs = plan_segments(50.0, cfg, [], words)
    assert len(segs) == 3
    for s in segs:
        assert 50 / 3 - cfg.pause_search_s <= s.end_s - s.start_s <= cfg.max_s  # near-even pieces
    for s in segs[1:]:
        assert s.reason == "speech_pause"
        assert s.start_s % 1.0 == pytest.approx(0.9)  # middle of a pause
    assert_no_word_split(segs, words)


def test_fixed_windows():
    cfg = SegmentConfig(plan="fixed", window_s=10.0, min_s=2.0)
    assert [(s.start_s, s.end_s) for s in plan_segments(25.0, cfg)] == [(0, 10), (10, 20), (20, 25)]
    # A remainder under min_s/2 joins the last window.
    assert [(s.start_s, s.end_s) for s in plan_segments(20.5, cfg)] == [(0, 10), (10, 20.5)]
    assert [s.reason for s in plan_segments(25.0, cfg)] == ["start", "window", "window"]
    # Cuts and words do not move fixed windows.
    assert plan_segments(25.0, cfg, [Cut(3.0)], [Word(9.8, 10.3, "x")]) == plan_segments(25.0, cfg)


@pytest.mark.parametrize("plan", PLANS)
def test_video_shorter_than_min_s_is_one_segment(plan):
    segs = plan_segments(0.3, SegmentConfig(plan=plan), [Cut(0.1), Cut(0.2)], [Word(0.05, 0.25, "hi")])
    assert [(s.start_s, s.end_s, s.reason) for s in segs] == [(0.0, 0.3, "start")]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_duration_is_an_error(bad):
    with pytest.raises(ValueError, match="duration_s must be a positive finite number"):
        plan_segments(bad, SegmentConfig())


def test_bad_config_is_an_error():
    with pytest.raises(ConfigError, match="scenes"):
        plan_segments(10.0, SegmentConfig(plan="scenes"))


def test_short_shot_merges_across_its_weaker_boundary():
    cfg = SegmentConfig(plan="shots", min_s=2.0, max_s=100.0)
    # The 1 s shot at 10-11 has a strong cut on its left and a weak one on its right.
    segs = plan_segments(30.0, cfg, [Cut(10.0, "cut", 80.0), Cut(11.0, "cut", 30.0)])
    assert [s.start_s for s in segs] == [0.0, 10.0]
    segs = plan_segments(30.0, cfg, [Cut(10.0, "cut", 30.0), Cut(11.0, "cut", 80.0)])
    assert [s.start_s for s in segs] == [0.0, 11.0]
    # Equal boundaries: it joins the shorter neighbour (the 4 s one on the left).
    segs = plan_segments(30.0, cfg, [Cut(4.0), Cut(8.0), Cut(9.0)])
    assert [s.start_s for s in segs] == [0.0, 4.0, 9.0]


def test_long_shot_is_split_evenly():
    segs = plan_segments(50.0, SegmentConfig(plan="shots", max_s=20.0), [Cut(5.0, "fade")])
    assert [round(s.start_s, 6) for s in segs] == [0.0, 5.0, 20.0, 35.0]
    assert [s.reason for s in segs] == ["start", "fade", "length_limit", "length_limit"]


def test_keyframe_is_the_frame_nearest_the_middle_inside_the_segment():
    segs = plan_segments(10.0, SegmentConfig(plan="shots", min_s=1.0), [Cut(4.0)], frame_times=[0.5, 3.9, 4.1, 9.9])
    assert segs[0].keyframe_s == 0.5  # middle 2.0: 0.5 is 1.5 away, 3.9 is 1.9 away
    assert segs[1].keyframe_s == 4.1  # middle 7.0: 4.1 and 9.9 are both 2.9 away; the earlier wins
    # No frame inside: the middle itself.
    assert plan_segments(10.0, SegmentConfig(plan="fixed", window_s=5.0), frame_times=[])[1].keyframe_s == 7.5


def test_words_in_assigns_by_midpoint():
    segs = [Segment(0, 0.0, 2.0, "start"), Segment(1, 2.0, 4.0, "shot_cut")]
    # midpoints 1.8, 2.4, 2.0 (exactly on the boundary: the later segment), 3.9, 4.0 (at the
    # very end: no segment), 0.0 (at the very start: the first)
    words = [Word(1.5, 2.1, "a"), Word(1.9, 2.9, "b"), Word(1.6, 2.4, "edge"), Word(3.8, 4.0, "late"),
             Word(3.9, 4.1, "past"), Word(0.0, 0.0, "zero")]
    assert [w.text for w in words_in(segs[0], words)] == ["a", "zero"]
    assert [w.text for w in words_in(segs[1], words)] == ["b", "edge", "late"]
    # a span to infinity picks up what ASR placed at or past the end
    assert [w.text for w in words_in(Span(2.0, math.inf), words)] == ["b", "edge", "late", "past"]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), duration=st.floats(min_value=0.5, max_value=100.0))
def test_words_in_matches_a_brute_force_midpoint_rule(data, duration):
    """words_in against an independent oracle: each word goes to the segment holding its
    midpoint, searched segment by segment, with words in their input order."""
    segs = plan_segments(duration, SegmentConfig(plan="fixed", window_s=data.draw(st.floats(0.3, 20.0))))
    words = data.draw(word_lists(duration))
    owner = {}
    for w in words:
        mid = (w.start_s + w.end_s) / 2
        for s in segs:
            if s.start_s <= mid and mid < s.end_s:
                owner[w.text] = s.index
                break
    for s in segs:
        assert [w.text for w in words_in(s, words)] == [w.text for w in words if owner.get(w.text) == s.index]


def test_boundary_cuts_word_counts_split_words():
    words = [Word(0.0, 1.0, "a"), Word(1.0, 2.0, "b"), Word(3.0, 4.0, "c")]
    assert boundary_cuts_word([1.0, 2.5], words) == 0  # on an edge or in a pause
    assert boundary_cuts_word([0.5, 3.2, 3.5], words) == 2


@settings(max_examples=200, deadline=None)
@given(duration=st.floats(min_value=0.001, max_value=2e4), part=st.floats(min_value=5.0, max_value=2000.0))
def test_plan_parts_tiles_without_tiny_tail(duration, part):
    parts = plan_parts(duration, part)
    assert parts[0].start_s == 0.0 and parts[-1].end_s == duration
    for a, b in zip(parts, parts[1:]):
        assert a.end_s == b.start_s
    assert all(p.duration_s > 0 for p in parts)
    if len(parts) > 1:
        assert parts[-1].duration_s >= part / 4 - 1e-6
        assert all(p.duration_s == pytest.approx(part) for p in parts[:-1])


def test_plan_parts_examples():
    assert plan_parts(1250.0, 600.0) == [Span(0.0, 600.0), Span(600.0, 1250.0)]
    assert plan_parts(1400.0, 600.0) == [Span(0.0, 600.0), Span(600.0, 1200.0), Span(1200.0, 1400.0)]
    assert plan_parts(100.0, 600.0) == [Span(0.0, 100.0)]
    with pytest.raises(ValueError, match="duration_s must be a positive finite number"):
        plan_parts(0.0, 600.0)
    with pytest.raises(ValueError, match="part_s must be a positive finite number"):
        plan_parts(10.0, 0.0)
