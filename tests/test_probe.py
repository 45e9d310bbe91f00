"""probe(): what a user's files really contain, and a clear reason when they are not video."""

from __future__ import annotations

import pytest
from PIL import Image

from vidan import synth
from vidan.media.probe import is_still_image, probe
from vidan.records import STAGE_PROBE, MediaError, MediaInfo, StreamInfo


def _fail(path, match: str) -> MediaError:
    with pytest.raises(MediaError, match=match) as err:
        probe(path)
    assert err.value.stage == STAGE_PROBE
    return err.value


def test_h264_mp4_with_audio_has_exact_ntsc_rate(tmp_path):
    path = tmp_path / "ntsc.mp4"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30000/1001", "-i", synth.speech_clip("coffee"),
                      "-t", "2", "-c:v", "libx264", "-c:a", "aac", "-ar", "16000", path])
    info = probe(path)
    assert info.frame_rate == "30000/1001"  # exact, never 29.97
    assert (info.video_codec, info.width, info.height) == ("h264", 320, 240)
    assert info.audio_codec == "aac" and info.audio_channels == 1 and info.audio_sample_rate == 16000
    assert info.n_video_streams == 1 and info.n_audio_streams == 1
    assert abs(info.duration_s - 2.0) < 0.1
    assert info.frame_count == 60
    assert info.size_bytes == path.stat().st_size
    assert info.container.startswith("mov,mp4")
    assert info.rotation == 0 and info.start_time_s == pytest.approx(0.0, abs=0.05)


def test_integer_rate_reads_as_fraction(tmp_path):
    path = synth.lavfi(tmp_path / "pal.mp4", "testsrc=size=160x120:rate=25", 1.0, "-c:v", "libx264")
    info = probe(path)
    assert info.frame_rate == "25/1" and info.frame_count == 25 and info.duration_s == pytest.approx(1.0)


@pytest.mark.parametrize("suffix,codec", [(".m4a", "aac"), (".wav", "pcm_s16le")])
def test_audio_only_is_not_an_error(tmp_path, suffix, codec):
    path = synth.lavfi(tmp_path / f"voice{suffix}", "sine=frequency=440:sample_rate=22050", 1.5)
    info = probe(path)
    assert not info.has_video and info.has_audio
    assert info.video_codec is None and info.frame_rate is None
    assert info.audio_codec == codec and info.audio_sample_rate == 22050
    assert info.duration_s == pytest.approx(1.5, abs=0.05)


def test_cover_art_in_audio_file_is_not_video(tmp_path):
    cover = tmp_path / "cover.png"
    Image.fromarray(synth.photo("coffee")).save(cover)
    path = tmp_path / "song.mp3"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "sine=d=1", "-i", cover, "-map", "0", "-map", "1", "-c:a", "libmp3lame",
                      "-c:v", "png", "-disposition:v", "attached_pic", path])
    info = probe(path)
    assert not info.has_video and info.has_audio
    assert [s.kind for s in info.streams] == ["audio", "attachment"]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert _fail(path, "empty file").message == "empty file (0 bytes)"


def test_missing_file(tmp_path):
    assert "No such file" in _fail(tmp_path / "gone.mp4", "cannot read file").message


def test_text_named_mp4_says_what_ffmpeg_said(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are my holiday notes, not a video\n" * 20)
    err = _fail(path, "Invalid data found")
    assert err.message.startswith("not a media file: Invalid data found when processing input")


def test_mp4_cut_before_its_index_is_rejected(tmp_path):
    whole = synth.lavfi(tmp_path / "whole.mp4", "testsrc=size=160x120:rate=25", 2.0, "-c:v", "libx264")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # moov is at the end
    assert _fail(cut, "moov atom not found").message.startswith("not a media file: ")


@pytest.mark.parametrize("fmt,codec", [("PNG", "png"), ("JPEG", "mjpeg"), ("GIF", "gif"), ("WEBP", "webp"),
                                       ("BMP", "bmp")])
def test_still_image_in_disguise(tmp_path, fmt, codec):
    path = tmp_path / "holiday.mp4"  # the name lies; the content decides
    Image.fromarray(synth.photo("chelsea")).save(path, format=fmt)
    assert _fail(path, "still image").message == f"not a video: still image ({codec})"


def test_animated_gif_is_a_video(tmp_path):
    path = synth.lavfi(tmp_path / "anim.gif", "testsrc=size=64x48:rate=5", 1.0)
    info = probe(path)
    assert info.video_codec == "gif" and info.frame_count == 5 and not is_still_image(info)


def test_no_audio_or_video(tmp_path):
    path = tmp_path / "subs.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    assert _fail(path, "no audio or video").message == "no audio or video streams (found: subtitle)"


@pytest.mark.parametrize("ccw,expected", [(90, 270), (-90, 90), (180, 180)])
def test_rotation_is_degrees_clockwise_to_upright(tmp_path, ccw, expected):
    plain = synth.lavfi(tmp_path / "plain.mp4", "testsrc=size=160x120:rate=25", 0.5, "-c:v", "libx264")
    rotated = tmp_path / "phone.mp4"
    # -display_rotation is counter-clockwise, as in the display matrix
    synth.run_ffmpeg(["-display_rotation", str(ccw), "-i", plain, "-c", "copy", rotated])
    info = probe(rotated)
    assert info.rotation == expected
    assert (info.width, info.height) == (160, 120)  # coded size, before rotation
    assert probe(plain).rotation == 0


def test_two_audio_streams_first_is_51(tmp_path):
    path = tmp_path / "movie.mkv"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "anullsrc=channel_layout=5.1:sample_rate=48000",
                      "-f", "lavfi", "-i", "anullsrc=channel_layout=stereo:sample_rate=44100",
                      "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "1",
                      "-map", "2:v", "-map", "0:a", "-map", "1:a", "-c:v", "libx264", "-c:a", "aac",
                      "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra", path])
    info = probe(path)
    assert info.n_audio_streams == 2 and info.n_video_streams == 1
    assert info.audio_channels == 6 and info.audio_sample_rate == 48000
    assert [s.language for s in info.streams if s.kind == "audio"] == ["eng", "fra"]
    assert [s.index for s in info.streams] == [0, 1, 2]


@pytest.mark.parametrize("name,args,codec,container", [
    ("vp9.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "vp9", "matroska,webm"),
    ("av1.mkv", ["-c:v", "libsvtav1", "-preset", "12"], "av1", "matroska,webm"),
    ("xvid.avi", ["-c:v", "mpeg4", "-vtag", "XVID"], "mpeg4", "avi"),
])
def test_other_codecs_and_containers(tmp_path, name, args, codec, container):
    path = synth.lavfi(tmp_path / name, "testsrc=size=160x120:rate=25", 1.0, *args)
    info = probe(path)
    assert info.video_codec == codec  # the codec, not the decoder's name (libdav1d)
    assert info.container == container
    assert info.frame_rate == "25/1" and info.duration_s == pytest.approx(1.0, abs=0.05)


def test_raw_dv_rate_is_its_pictures_not_its_clock(tmp_path):
    # the DV demuxer counts time in 1/60000 s and gives that as the average rate
    path = synth.lavfi(tmp_path / "ntsc.dv", "testsrc=size=720x480:rate=30000/1001", 1.0,
                       "-c:v", "dvvideo", "-pix_fmt", "yuv411p")
    info = probe(path)
    assert info.container == "dv" and info.video_codec == "dvvideo"
    assert info.frame_rate == "30000/1001" and info.duration_s == pytest.approx(1.0, abs=0.05)


def test_raw_stream_without_timestamps_gets_duration_from_packets(tmp_path):
    path = synth.lavfi(tmp_path / "raw.h264", "testsrc=size=160x120:rate=25", 2.0, "-c:v", "libx264", "-f", "h264")
    info = probe(path)
    assert info.container == "h264" and info.duration_s == pytest.approx(2.0, abs=0.05)


def test_is_still_image_on_hand_built_info():
    def info(container, codec, frames, audio=False):
        streams = (StreamInfo(0, "video", codec),) + ((StreamInfo(1, "audio", "aac"),) if audio else ())
        return MediaInfo("x", 1, container, 1.0, 0.0, streams, video_codec=codec, frame_count=frames)

    assert is_still_image(info("png_pipe", "png", None))
    assert is_still_image(info("gif", "gif", 1))
    assert not is_still_image(info("gif", "gif", 12))
    assert not is_still_image(info("avi", "mjpeg", 300))  # motion JPEG is video
    assert not is_still_image(info("mov,mp4,m4a,3gp,3g2,mj2", "h264", 1))
    assert not is_still_image(info("mov,mp4,m4a,3gp,3g2,mj2", "png", 1, audio=True))  # a slideshow with sound


def test_timecode_track_is_listed_as_data(tmp_path):
    path = synth.lavfi(tmp_path / "cam.mov", "testsrc=size=160x120:rate=25", 1.0, "-c:v", "libx264",
                       "-timecode", "01:00:00:00")
    info = probe(path)
    assert [s.kind for s in info.streams] == ["video", "data"]
    assert info.has_video and info.video_codec == "h264"


def test_a_matroska_video_that_stops_before_its_audio_is_not_cut_short(tmp_path):
    """Matroska has no length per track in its index; its muxers tag each track with one.
    A video track that ends before the audio by design is whole; a file cut in half is
    still found out (the tag promises more than the data holds)."""
    from vidan.config import FrameConfig
    from vidan.media.frames import decode_part
    from vidan.records import Span

    path = tmp_path / "short_video.mkv"
    synth.run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3",
                      "-f", "lavfi", "-i", "sine=frequency=440:duration=6.5",
                      "-c:v", "libx264", "-c:a", "aac", path])
    info = probe(path)
    assert info.video_end_s == pytest.approx(3.0, abs=0.05)
    assert info.audio_end_s == pytest.approx(6.5, abs=0.05) and info.duration_s == pytest.approx(6.5, abs=0.05)
    assert decode_part(path, info, Span(0.0, info.duration_s), FrameConfig()).notes == []

    cut = tmp_path / "cut.mkv"
    data = path.read_bytes()
    cut.write_bytes(data[:len(data) // 3])
    info = probe(cut)
    notes = decode_part(cut, info, Span(0.0, info.duration_s), FrameConfig()).notes
    assert any(n.startswith("video stream ends at") for n in notes), notes
