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
