"""Audio extraction: the samples ASR and loudness see, aligned to vidan's timeline."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vidan import synth
from vidan.media.audio import SAMPLE_RATE, extract_audio
from vidan.records import STAGE_AUDIO, MediaError, MediaInfo, Span, StreamInfo


def _info(path) -> MediaInfo:
    """The real prober when it exists; otherwise the few fields audio extraction reads."""
    try:
        from vidan.media.probe import probe
    except ImportError:
        probe = None
    if probe is not None:
        return probe(str(path))
    import av

    with av.open(str(path)) as c:
        streams = tuple(StreamInfo(s.index, s.type, s.codec_context.name) for s in c.streams)
        return MediaInfo(path=str(path), size_bytes=os.path.getsize(path), container=c.format.name,
                         duration_s=(c.duration or 0) / 1e6, start_time_s=(c.start_time or 0) / 1e6,
                         streams=streams)


def _lag_s(samples: np.ndarray, reference: np.ndarray) -> float:
    """Where the first second of ``reference`` sits inside ``samples``."""
    probe = reference[:SAMPLE_RATE]
    return float(np.argmax(np.correlate(samples, probe, "valid"))) / SAMPLE_RATE


def _dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def speech_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.mp4"
    return synth.write_video(path, [synth.Scene(5.0, synth.photo("coffee"))], audio=synth.speech_clip("coffee"))


def test_whole_file_is_mono_16k_speech(speech_video):
    info = _info(speech_video)
    samples, notes = extract_audio(speech_video, info)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - info.duration_s) < 0.1
    assert np.sqrt(np.mean(samples ** 2)) > 0.01  # real speech, not silence
    assert notes == []
    reference = synth.read_audio(synth.speech_clip("coffee"))
    assert _lag_s(samples[: 3 * SAMPLE_RATE], reference) == pytest.approx(0.0, abs=0.005)


def test_span_matches_the_same_stretch_of_the_whole(speech_video):
    info = _info(speech_video)
    whole, _ = extract_audio(speech_video, info)
    part, notes = extract_audio(speech_video, info, Span(1.5, 3.5))
    assert len(part) == pytest.approx(2.0 * SAMPLE_RATE, abs=2)
    i = int(1.5 * SAMPLE_RATE)
    assert np.corrcoef(part, whole[i:i + len(part)])[0, 1] > 0.95
    assert notes == []


@pytest.mark.parametrize("container", ["mp4", "ts"])
def test_audio_that_starts_late_stays_aligned(tmp_path, container):
    # MPEG-TS also starts its clock at 1.4 s, so this checks both offsets at once
    path = synth.write_video(tmp_path / f"late.{container}", [synth.Scene(4.0, (200, 30, 30))],
                             audio=synth.speech_clip("coffee"), audio_offset_s=1.0)
    info = _info(path)
    reference = synth.read_audio(synth.speech_clip("coffee"))
    whole, _ = extract_audio(path, info)
    assert np.abs(whole[: int(0.9 * SAMPLE_RATE)]).max() < 1e-3  # silence before the track starts
    assert _lag_s(whole[: 3 * SAMPLE_RATE], reference) == pytest.approx(1.0, abs=0.005)
    part, _ = extract_audio(path, info, Span(0.5, 2.5))
    assert len(part) == pytest.approx(2.0 * SAMPLE_RATE, abs=2)
    assert _lag_s(part, reference) == pytest.approx(0.5, abs=0.005)


def test_audio_track_shorter_than_video_is_not_a_loss(tmp_path):
    path = synth.write_video(tmp_path / "short.mp4", [synth.Scene(8.0, (0, 90, 0))], audio=synth.speech_clip("bread"))
    info = _info(path)
    samples, notes = extract_audio(path, info)
    assert len(samples) / SAMPLE_RATE == pytest.approx(4.85, abs=0.1)
    assert info.audio_end_s == pytest.approx(4.85, abs=0.1)
    assert not any("ends at" in n for n in notes), notes


def test_a_wmv_whose_audio_stops_before_its_video_is_whole(tmp_path):
    """ASF keeps one play time for the whole file, which ffmpeg hands every stream: the
    audio's end is unknown, not the file's, and a track shorter than the video is no loss."""
    made = synth.write_video(tmp_path / "short.mp4", [synth.Scene(8.0, (0, 90, 0))], audio=synth.speech_clip("bread"))
    path = tmp_path / "short.wmv"
    synth.run_ffmpeg(["-i", made, "-c:v", "wmv2", "-c:a", "wmav2", path])
    info = _info(path)
    assert info.container == "asf" and info.audio_end_s is None
    assert info.duration_s == pytest.approx(8.0, abs=0.15)
    samples, notes = extract_audio(path, info)
    assert len(samples) / SAMPLE_RATE == pytest.approx(4.85, abs=0.15)
    assert notes == []


def test_audio_cut_short_of_its_own_index_is_noted(tmp_path):
    path = synth.write_video(tmp_path / "short.mp4", [synth.Scene(8.0, (0, 90, 0))], audio=synth.speech_clip("bread"))
    info = _info(path)
    from dataclasses import replace

    # the index promises 8 s of audio; the data holds 4.85 s, as in a file cut short
    samples, notes = extract_audio(path, replace(info, audio_end_s=8.0))
    assert any(n.startswith("audio ends at 4.") and n.endswith("of 8.0 s") for n in notes), notes


@pytest.mark.parametrize("container", ["mp4", "mkv"])  # Matroska has no per-stream duration
def test_a_span_after_the_track_ended_is_silent_not_a_loss(tmp_path, container):
    path = synth.write_video(tmp_path / f"short.{container}", [synth.Scene(8.0, (0, 90, 0))],
                             audio=synth.speech_clip("bread"))
    info = _info(path)
    samples, notes = extract_audio(path, info, Span(6.0, 8.0))
    assert len(samples) == 0 and notes == []
    samples, notes = extract_audio(path, info, Span(3.0, 8.0))
    assert len(samples) / SAMPLE_RATE == pytest.approx(1.85, abs=0.1) and notes == []


def test_file_cut_short_is_noted_where_its_audio_stops(tmp_path):
    whole = tmp_path / "whole.m4a"
    synth.run_ffmpeg(["-i", synth.concat_audio(tmp_path / "talk.wav", [(0.5, synth.speech_clip("bread")),
                                                                      (5.5, synth.speech_clip("cat"))]),
                      "-c:a", "aac", "-movflags", "+faststart", whole])  # the index first: it survives the cut
    data = whole.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) * 6 // 10])
    info = _info(cut)
    assert info.audio_end_s == pytest.approx(10.9, abs=0.1)
    samples, notes = extract_audio(cut, info, Span(0.0, 5.0))
    assert len(samples) == 5 * SAMPLE_RATE and notes == []
    samples, notes = extract_audio(cut, info)
    ends = [n for n in notes if n.startswith("audio ends at ")]
    assert len(ends) == 1 and ends[0].endswith(" of 10.9 s"), notes
    assert float(ends[0].split()[3]) == pytest.approx(len(samples) / SAMPLE_RATE, abs=0.05)
    assert 5.0 < len(samples) / SAMPLE_RATE < 8.0
    # heard with context by two parts, the end is noted once: by the part it falls in
    parts = [(Span(0.0, 10.0), Span(0.0, 5.0)), (Span(0.0, info.duration_s), Span(5.0, info.duration_s))]
    part_notes = [extract_audio(cut, info, heard, own=own)[1] for heard, own in parts]
    assert [sum(n.startswith("audio ends at ") for n in notes) for notes in part_notes] == [0, 1], part_notes


@pytest.fixture(scope="module")
def two_tracks(tmp_path_factory):
    """Stream 1: 5.1 AAC at 440 Hz; stream 2: stereo 1000 Hz, marked default."""
    path = tmp_path_factory.mktemp("tracks") / "two tracks.mkv"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi", "-i",
                      "sine=frequency=440:sample_rate=48000", "-f", "lavfi", "-i",
                      "sine=frequency=1000:sample_rate=48000", "-t", "2",
                      "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-c:a", "aac",
                      "-ac:a:0", "6", "-ac:a:1", "2", "-disposition:a:0", "0", "-disposition:a:1", "default",
                      str(path)])
    return path


def test_default_audio_stream_is_chosen_among_several(two_tracks):
    info = _info(two_tracks)
    assert info.n_audio_streams == 2
    samples, notes = extract_audio(two_tracks, info)
    assert _dominant_hz(samples) == pytest.approx(1000, abs=10)
    assert notes == []  # choosing a stream loses nothing: no note, so the file stays "ok"


def test_surround_stream_is_downmixed_to_mono(two_tracks):
    samples, notes = extract_audio(two_tracks, _info(two_tracks), stream=1)
    assert samples.ndim == 1 and len(samples) == pytest.approx(2 * SAMPLE_RATE, abs=SAMPLE_RATE // 20)
    assert np.sqrt(np.mean(samples ** 2)) > 0.01
    assert _dominant_hz(samples) == pytest.approx(440, abs=10)
    assert notes == []


def test_requesting_a_video_stream_is_refused(two_tracks):
    with pytest.raises(MediaError, match="stream #0 is not an audio stream"):
        extract_audio(two_tracks, _info(two_tracks), stream=0)


def test_file_without_audio_is_refused(tmp_path):
    path = synth.write_video(tmp_path / "mute.mp4", [synth.Scene(1.0, (0, 0, 200))])
    with pytest.raises(MediaError, match="no audio stream") as err:
        extract_audio(path, _info(path))
    assert err.value.stage == STAGE_AUDIO and err.value.message == "no audio stream"


def test_corrupt_file_carries_ffmpegs_own_words(tmp_path, speech_video):
    info = _info(speech_video)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(50_000))
    with pytest.raises(MediaError, match="Invalid data found") as err:
        extract_audio(garbage, info)
    assert err.value.stage == STAGE_AUDIO
    assert "Invalid data found when processing input" in err.value.message
    assert "see stderr" not in err.value.message
    assert "[in#0] moov atom not found" in err.value.message  # no memory address: the same fault reads the same

    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(speech_video.read_bytes()[:20_000])  # x264 mp4: the moov atom is at the end
    with pytest.raises(MediaError, match="moov atom not found"):
        extract_audio(truncated, info)


def test_a_recording_that_starts_mid_gop_has_whole_audio(tmp_path):
    """A broadcast capture cut at any byte starts without the picture's parameter sets.
    ffmpeg's decoding of that video while it learns the streams says "non-existing PPS",
    which is no fault of the audio; the video's own check notes the missing pictures."""
    from vidan.config import FrameConfig
    from vidan.media.frames import decode_part

    made = synth.write_video(tmp_path / "talk.mp4", [synth.Scene(8.0, (0, 90, 0))], audio=synth.speech_clip("bread"))
    whole = tmp_path / "whole.ts"
    synth.run_ffmpeg(["-i", made, "-c:v", "libx264", "-g", "100", "-c:a", "aac", "-f", "mpegts", whole])
    data = whole.read_bytes()
    cut = tmp_path / "capture.ts"
    cut.write_bytes(data[(len(data) * 3 // 10) // 188 * 188 + 57:])  # mid-packet, as a capture starts
    info = _info(cut)
    samples, notes = extract_audio(cut, info)
    assert len(samples) > 0 and notes == []
    frames = decode_part(cut, info, Span(0.0, info.duration_s), FrameConfig())
    assert any(n.startswith("first video frame at") for n in frames.notes), frames.notes


def test_ffmpeg_complaints_are_the_audio_s_own_and_counted():
    from vidan.media.audio import _stderr_lines

    said = (b"[h264 @ 0x55642f482c80] non-existing PPS 0 referenced\n    Last message repeated 1 times\n"
            b"[aac @ 0x55642f482d00] Input buffer exhausted before END element found\n"
            b"[h264 @ 0x55642f482c80] no frame!\n[vist#0:0/h264 @ 0x55642f4] Decoding error\n"
            b"[aac @ 0x55642f482d00] Input buffer exhausted before END element found\n"
            b"[mpegts @ 0x55642f481000] Packet corrupt (stream = 1, dts = 900)\n")
    assert _stderr_lines(said) == ("[aac] Input buffer exhausted before END element found (x2) | "
                                   "[mpegts] Packet corrupt (stream = 1, dts = 900)")
    assert _stderr_lines(b"[h264 @ 0x1] no frame!\n") == ""
    assert _stderr_lines(b"[h264 @ 0x1] no frame!\n", audio_only=False) == "[h264] no frame!"


def _mono_by_ffmpeg(path) -> np.ndarray:
    from vidan.media.ffmpeg_bin import ffmpeg_exe
    import subprocess

    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, "<f4")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_stereo_with_one_side_inverted_is_heard_not_cancelled(tmp_path):
    """A miswired microphone puts the voice on both channels, one upside down: mixed to
    mono as ffmpeg mixes, it cancels to near silence and the words are gone. One side
    alone carries them whole."""
    voice = synth.speech_clip("bread")
    path = tmp_path / "inverted.mp4"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "color=size=160x120:rate=25", "-i", voice,
                      "-af", "pan=stereo|c0=c0|c1=-1*c0", "-shortest", "-c:v", "libx264", "-c:a", "aac", path])
    info = _info(path)
    assert info.audio_channels == 2
    samples, notes = extract_audio(path, info)
    assert notes == []
    assert _rms(_mono_by_ffmpeg(path)) < 0.01 * _rms(samples)  # what a plain mix would have heard
    reference = _mono_by_ffmpeg(voice)
    n = min(len(samples), len(reference))
    # the voice at its own level and time (AAC's noise aside)
    assert _rms(samples) == pytest.approx(_rms(reference), rel=0.05)
    assert np.corrcoef(samples[:n], reference[:n])[0, 1] > 0.95


def test_ordinary_stereo_is_mixed_exactly_as_ffmpeg_mixes_it(tmp_path):
    path = tmp_path / "stereo.mp4"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "color=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=300:duration=3",
                      "-f", "lavfi", "-i", "sine=frequency=700:duration=3", "-filter_complex", "[1:a][2:a]amerge=inputs=2[a]",
                      "-map", "0:v", "-map", "[a]", "-t", "3", "-c:v", "libx264", "-c:a", "aac", path])
    info = _info(path)
    assert info.audio_channels == 2
    samples, notes = extract_audio(path, info)
    reference = _mono_by_ffmpeg(path)
    assert len(samples) == len(reference) and notes == []
    assert np.abs(samples - reference).max() < 1e-6


def test_timeout_is_reported(speech_video):
    with pytest.raises(MediaError, match=r"ffmpeg timed out after 0.001 s"):
        extract_audio(speech_video, _info(speech_video), timeout_s=0.001)


def test_hostile_file_name_is_only_a_name(tmp_path, monkeypatch, speech_video):
    monkeypatch.chdir(tmp_path)
    name = "-a b 'q' \"d\" $(touch pwned) `touch pwned2`; touch pwned3 |\nx.mp4"
    path = tmp_path / name
    path.write_bytes(speech_video.read_bytes())
    before = set(os.listdir(tmp_path))
    samples, _ = extract_audio(name, _info(path))  # relative, and starting with "-"
    assert np.sqrt(np.mean(samples ** 2)) > 0.01
    assert set(os.listdir(tmp_path)) == before


def test_runs_inside_an_isolated_child(speech_video):
    from vidan.media.isolate import run_isolated

    info = _info(speech_video)
    samples, notes = run_isolated("vidan.media.audio:extract_audio", {"path": str(speech_video), "info": info,
                                  "span": Span(1.0, 2.0)}, stage=STAGE_AUDIO, timeout_s=60, memory_mb=1024)
    direct, _ = extract_audio(speech_video, info, Span(1.0, 2.0))
    assert np.array_equal(samples, direct) and notes == []
