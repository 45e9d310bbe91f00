"""Gathering one video's part results into per-segment features: pure, no media."""

import numpy as np
import pytest

from vidan.assemble import VideoParts, gather
from vidan.config import Config
from vidan.records import AudioPart, Cut, FramePart, MediaInfo, Span, StreamInfo, Word

VIDEO = StreamInfo(0, "video", "h264")
AUDIO = StreamInfo(1, "audio", "aac")


def info(duration, streams=(VIDEO, AUDIO)):
    return MediaInfo(path="/v.mp4", size_bytes=1, container="mp4", duration_s=duration, start_time_s=0.0,
                     streams=tuple(streams))


def frames(span, times, classes):
    probs = np.zeros((len(times), 4), np.float32)
    probs[np.arange(len(times)), classes] = 1.0
    return FramePart(span=span, times_s=np.array(times, float), probs=probs, cuts=[Cut(5.0, "cut", 50.0)],
                     backend="pyav", frames_decoded=len(times), frames_sampled=len(times))


def audio(span, words, loud_db, speech):
    n = int(round(span.duration_s / 0.1))
    return AudioPart(span=span, words=words, language="en", language_probability=0.99, no_speech_prob=0.01,
                     speech=speech, loudness_hop_s=0.1, loudness_db=np.full(n, loud_db, np.float32),
                     acoustic=np.tile(np.eye(64, dtype=np.float32)[:1], (int(span.duration_s), 1)))


CFG = Config().replace(segments={"plan": "shots", "min_s": 1.0})


def test_segments_follow_the_cut_and_take_their_own_frames_words_and_sound():
    parts = VideoParts(info(10.0), transcribed=True)
    parts.frames = [frames(Span(0, 10), [0.5, 1.5, 2.5, 5.5, 6.5], [0, 0, 0, 2, 2])]
    parts.audio = [audio(Span(0, 10), [Word(1.0, 1.4, " hello"), Word(6.0, 6.5, " world")], -20.0, [Span(1.0, 1.4)])]
    feats = gather(parts, CFG)
    assert [(f.segment.start_s, f.segment.end_s) for f in feats] == [(0.0, 5.0), (5.0, 10.0)]
    first, second = feats
    assert int(np.argmax(first.mean_probs)) == 0 and int(np.argmax(second.mean_probs)) == 2
    assert first.transcript == "hello" and second.transcript == "world"
    assert first.speech_ratio == pytest.approx(0.4 / 5.0) and second.speech_ratio == 0.0
    assert first.loudness_db == pytest.approx(-20.0, abs=1e-3)
    assert first.language == "en" and np.isclose(np.linalg.norm(first.acoustic), 1.0)


def test_no_audio_gives_nulls_not_zeros_and_silence_gives_empty_transcript():
    silent_file = VideoParts(info(4.0, streams=(VIDEO,)))
    silent_file.frames = [frames(Span(0, 4), [0.5, 1.5], [1, 1])]
    f = gather(silent_file, CFG)[0]
    assert f.transcript is None and f.words is None and f.speech_ratio is None and f.loudness_db is None
    assert f.acoustic is None and f.language is None

    quiet = VideoParts(info(4.0), transcribed=True)
    quiet.frames = [frames(Span(0, 4), [0.5], [1])]
    quiet.audio = [audio(Span(0, 4), [], -90.0, [])]
    f = gather(quiet, CFG)[0]
    assert f.transcript == "" and f.words == [] and f.speech_ratio == 0.0 and f.language is None


def test_a_segment_between_sampled_frames_borrows_the_nearest_one():
    parts = VideoParts(info(10.0))
    parts.frames = [frames(Span(0, 10), [0.5, 9.5], [0, 3])]
    parts.frames[0].cuts = [Cut(8.9, "cut", 50.0)]
    feats = gather(parts, Config().replace(segments={"plan": "shots", "min_s": 0.5}))
    last = feats[-1]
    assert last.segment.start_s == 8.9 and int(np.argmax(last.mean_probs)) == 3


def test_failed_visual_parts_leave_pictures_null_but_keep_the_sound():
    parts = VideoParts(info(6.0), transcribed=True)
    parts.audio = [audio(Span(0, 6), [Word(0.5, 0.9, " hi")], -30.0, [Span(0.5, 0.9)])]
    feats = gather(parts, CFG)
    assert all(f.mean_probs is None for f in feats)
    assert " ".join(f.transcript for f in feats).strip() == "hi"


# --- parts heard with context: every word once ----------------------------------------

def said(*timed):
    """Words from (text, start, end) triples."""
    return [Word(a, b, " " + t) for t, a, b in timed]


def part(span, words):
    return audio(span, words, -30.0, [])


SENTENCE = "the cat sat on the mat"
# The same six words heard by both parts, with the pause after "sat" both heard. The
# second "the" straddles the 20 s boundary and the two parts disagree on which side
# its middle lies: ignoring the other part, one reading keeps it twice, the other drops it.
HEARD_BEFORE = [("the", 17.0, 17.3), ("cat", 17.3, 17.8), ("sat", 17.8, 18.4), ("on", 19.0, 19.5), ("mat", 20.3, 20.8)]
HEARD_AFTER = [("the", 17.05, 17.35), ("cat", 17.35, 17.85), ("sat", 17.85, 18.45), ("on", 19.1, 19.6), ("mat", 20.35, 20.9)]


@pytest.mark.parametrize("before, after", [((19.5, 20.1), (19.7, 20.3)), ((19.8, 20.3), (19.7, 20.1))],
                         ids=["both-would-keep-it", "neither-would-keep-it"])
def test_a_word_straddling_the_boundary_is_kept_once(before, after):
    a = said(*HEARD_BEFORE[:4], ("the", *before), HEARD_BEFORE[4])
    b = said(*HEARD_AFTER[:4], ("the", *after), HEARD_AFTER[4])
    parts = VideoParts(info(40.0), audio=[part(Span(20, 40), b), part(Span(0, 20), a)], transcribed=True)
    words = parts.words
    assert " ".join(w.text.strip() for w in words) == SENTENCE
    assert [w.start_s for w in words] == sorted(w.start_s for w in words)


def test_speech_without_a_pause_at_the_boundary_is_joined_at_a_word_both_heard():
    texts = "we kept on talking right across the part boundary without any pause at all for minutes".split()
    # one word every 0.4 s, no gaps; the second part hears each 0.05 s later, so no
    # instant lies between words in both readings
    a = [Word(16.98 + 0.4 * i, 17.38 + 0.4 * i, " " + t) for i, t in enumerate(texts)]
    b = [Word(w.start_s + 0.05, w.end_s + 0.05, w.text) for w in a]
    # "part" has its middle at 19.98 s in the first reading, 20.03 s in the second; the
    # talk goes on past both ends of the stretch searched for a joint
    words = VideoParts(info(40.0), audio=[part(Span(0, 20), a), part(Span(20, 40), b)]).words
    assert [w.text.strip() for w in words] == texts
    assert all(x.start_s < y.start_s for x, y in zip(words, words[1:]))


def test_a_word_said_over_and_over_across_the_boundary_is_counted_right():
    a = [Word(14.98 + 0.4 * i, 15.38 + 0.4 * i, " no") for i in range(25)]  # 15-25 s, no pause
    b = [Word(w.start_s + 0.05, w.end_s + 0.05, w.text) for w in a]
    words = VideoParts(info(40.0), audio=[part(Span(0, 20), a), part(Span(20, 40), b)]).words
    assert len(words) == 25
    assert all(x.end_s <= y.start_s + 0.05 for x, y in zip(words, words[1:]))


def test_readings_that_differ_near_the_boundary_are_joined_at_the_pause_both_heard():
    # no word near 20 s reads the same in both parts, so no word can anchor the joint;
    # the pause after "sat"/"sad" can: what lies before it comes from the first part
    a = said(("the", 16.5, 16.8), ("cat", 16.8, 17.2), ("sat", 17.6, 18.2), ("lunch", 19.6, 20.1), ("bad", 20.5, 20.9))
    b = said(("the", 16.5, 16.8), ("cat", 16.8, 17.2), ("sad", 17.65, 18.25), ("launch", 19.8, 20.3), ("pad", 20.55, 20.95))
    words = VideoParts(info(40.0), audio=[part(Span(0, 20), a), part(Span(20, 40), b)]).words
    assert [w.text.strip() for w in words] == ["the", "cat", "sat", "launch", "pad"]


def test_parts_shorter_than_their_context_still_keep_each_word_once():
    # 3 s parts heard with 5 s of context, talk without gaps, each part a little later
    # than the one before. Only the first two heard a pause at 5.1-5.4 s (the third
    # heard a word there) and only the last two one at 3.6-3.9 s: the joint on each side
    # of the middle part must stay on its own side, or the middle keeps nothing and the
    # words between are kept twice.
    def heard(k, span, missing):
        return part(span, said(*[(f"w{i}", 0.3 * i + 0.02 * k, 0.3 * i + 0.3 + 0.02 * k) for i in range(30)
                                 if i not in missing]))

    parts = [heard(0, Span(0, 3), (17,)), heard(1, Span(3, 6), (12, 17)), heard(2, Span(6, 9), (12,))]
    words = VideoParts(info(9.0), audio=parts).words
    assert [w.text.strip() for w in words] == [f"w{i}" for i in range(30)]


def test_words_only_one_part_heard_come_from_that_part():
    a = said(("hello", 1.0, 1.4), ("there", 19.7, 20.4))
    b = said(("there", 19.75, 20.45), ("friend", 22.0, 22.5))
    words = VideoParts(info(40.0), audio=[part(Span(0, 20), a), part(Span(20, 40), b)]).words
    assert [w.text.strip() for w in words] == ["hello", "there", "friend"]


def test_a_part_whose_neighbour_failed_keeps_its_own_span_only():
    # the middle part failed: what the others heard of its span is context, not theirs
    a = said(("early", 5.0, 5.5), ("edge", 19.6, 20.2), ("context", 22.0, 22.5))
    c = said(("context", 37.0, 37.5), ("late", 45.0, 45.5), ("past", 60.0, 60.4))
    words = VideoParts(info(60.0), audio=[part(Span(0, 20), a), part(Span(40, 60), c)]).words
    # ASR may put the last word a little past the end: the last part keeps it
    assert [w.text.strip() for w in words] == ["early", "edge", "late", "past"]


def test_a_segment_across_a_part_boundary_takes_frames_words_and_sound_from_both():
    cfg = Config().replace(segments={"plan": "shots", "min_s": 1.0, "max_s": 40.0})
    parts = VideoParts(info(40.0), transcribed=True)
    parts.frames = [frames(Span(0, 20), [0.5 + i for i in range(20)], [0] * 20),
                    frames(Span(20, 40), [20.5 + i for i in range(20)], [2] * 20)]
    parts.frames[0].cuts, parts.frames[1].cuts = [Cut(15.0, "cut", 50.0)], [Cut(25.0, "cut", 50.0)]
    a = said(("left", 16.0, 16.5), ("across", 19.8, 20.3), ("context", 21.0, 21.5))
    b = said(("across", 19.85, 20.3), ("context", 21.05, 21.5), ("right", 24.0, 24.5))
    parts.audio = [audio(Span(0, 20), a, -20.0, [Span(16.0, 20.0)]), audio(Span(20, 40), b, -40.0, [Span(20.0, 21.5)])]
    feats = gather(parts, cfg)
    middle = [f for f in feats if f.segment.start_s == 15.0]
    assert len(middle) == 1 and middle[0].segment.end_s == 25.0
    m = middle[0]
    assert list(m.frame_times) == [15.5 + i for i in range(10)]
    assert m.mean_probs[0] == pytest.approx(0.5) and m.mean_probs[2] == pytest.approx(0.5)
    assert m.transcript == "left across context right"
    assert m.speech_ratio == pytest.approx(5.5 / 10)
    # mean power of 5 s at -20 dB and 5 s at -40 dB
    assert m.loudness_db == pytest.approx(10 * np.log10((1e-2 + 1e-4) / 2), abs=0.01)


# --- detections and sound events: into features, then into rows ----------------------

from vidan.records import Box  # noqa: E402


def _detected(span, times, classes, faces, people, boxes):
    p = frames(span, times, classes)
    p.faces = np.array(faces, np.int16)
    p.people = np.array(people, np.float32)
    p.boxes = boxes
    return p


def _with_events(part, rows, hop=1.0):
    part.events = np.array(rows, np.float16)
    part.events_hop_s = hop
    return part


def test_detections_and_sound_events_are_gathered_per_segment():
    parts = VideoParts(info(10.0), transcribed=True)
    face = Box("face", 0.4, 0.1, 0.6, 0.4, 0.9)
    walker = Box("person", 0.1, 0.2, 0.3, 0.9, 3.1)
    parts.frames = [_detected(Span(0, 10), [0.5, 2.5, 4.5, 6.5, 8.5], [0, 0, 0, 2, 2],
                              [0, 2, 1, 0, 0], [0.0, 0.0, 2.5, 0.0, 0.0], [[], [face, face], [face, walker], [], []])]
    a = audio(Span(0, 10), [Word(1.0, 1.4, " hello")], -20.0, [Span(1.0, 1.4)])
    a.detected_language, a.detected_probability, a.language = "cy", 0.4, "en"
    parts.audio = [_with_events(a, [[1, 0]] * 5 + [[0, 1]] * 5)]
    first, second = gather(parts, CFG)
    assert first.n_faces == 2 and first.person == pytest.approx(2.5)
    assert second.n_faces == 0 and second.person == 0.0
    # the keyframe's boxes: the frame nearest the segment's keyframe time
    kf = first.segment.keyframe_s if first.segment.keyframe_s is not None else 2.5
    nearest = int(np.argmin(np.abs(np.array([0.5, 2.5, 4.5]) - kf)))
    assert first.boxes == [[], [face, face], [face, walker]][nearest]
    assert np.allclose(first.events, [1, 0]) and np.allclose(second.events, [0, 1])
    assert (first.language, first.detected_language, first.detected_probability) == ("en", "cy", pytest.approx(0.4))


def test_without_detectors_or_sound_events_the_fields_are_none():
    parts = VideoParts(info(10.0), transcribed=True)
    parts.frames = [frames(Span(0, 10), [0.5, 5.5], [0, 2])]
    parts.audio = [audio(Span(0, 10), [Word(1.0, 1.4, " hello")], -20.0, [Span(1.0, 1.4)])]
    for f in gather(parts, CFG):
        assert (f.n_faces, f.person, f.boxes, f.events, f.detected_language) == (None, None, None, None, None)
    # one part with detections and one without: no half-counted segments
    parts = VideoParts(info(10.0))
    parts.frames = [_detected(Span(0, 5), [0.5], [0], [1], [0.0], [[]]), frames(Span(5, 10), [5.5], [2])]
    assert all(f.n_faces is None and f.boxes is None for f in gather(parts, CFG))


def test_frames_the_detectors_skipped_count_for_nothing_and_a_segment_takes_the_nearest_looked_at():
    # detect.every_s: frames 1.5 and 3.5 were not looked at (-1 faces, NaN person, no boxes)
    parts = VideoParts(info(10.0), transcribed=True)
    face = Box("face", 0.4, 0.1, 0.6, 0.4, 0.9)
    parts.frames = [_detected(Span(0, 10), [0.5, 1.5, 2.5, 3.5, 5.5, 6.5], [0, 0, 0, 0, 2, 2],
                              [1, -1, 0, -1, 0, -1], [0.0, np.nan, 3.0, np.nan, 0.0, np.nan],
                              [[face], None, [], None, [], None])]
    parts.audio = [audio(Span(0, 10), [], -20.0, [])]
    first, second = gather(parts, CFG)
    assert first.n_faces == 1 and first.person == pytest.approx(3.0)  # not -1, not NaN
    assert second.n_faces == 0 and second.person == 0.0
    assert first.boxes in ([face], [])  # a looked-at frame's boxes, never a skipped one's None
    assert second.boxes == []
    # a short segment with no looked-at frame inside takes the nearest looked-at one
    short = VideoParts(info(4.0))
    short.frames = [_detected(Span(0, 4), [0.5, 1.5, 2.5, 3.5], [0, 0, 0, 0], [2, -1, 0, -1],
                              [1.0, np.nan, 0.0, np.nan], [[face, face], None, [], None])]
    cfg = Config().replace(segments={"plan": "fixed", "window_s": 1.0, "min_s": 0.5})
    feats = gather(short, cfg)
    assert [f.n_faces for f in feats] == [2, 2, 0, 0]
    assert all(f.boxes is not None for f in feats)
