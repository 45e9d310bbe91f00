"""Probe one file with PyAV: streams, exact frame rate, duration, rotation.

The bundled ffmpeg has no ffprobe, so everything here comes from ``av.open``. A file
that cannot be used as video or audio raises ``MediaError(STAGE_PROBE, ...)`` whose
message starts with a short human phrase and ends with what PyAV itself said.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from fractions import Fraction
from typing import Any, Optional

from vidan.media.timeline import clock_jumps, may_jump
from vidan.records import STAGE_PROBE, MediaError, MediaInfo, StreamInfo

# Codecs that only ever carry pictures; one frame of them is a photo, not a video.
_IMAGE_CODECS = frozenset({
    "png", "apng", "mjpeg", "jpeg2000", "jpegls", "jpegxl", "bmp", "webp", "tiff", "gif", "qoi",
    "pgm", "pgmyuv", "ppm", "pbm", "pam", "pcx", "sgi", "targa", "dpx", "exr", "hdr", "psd",
    "xbm", "xpm", "xwd", "sunrast", "photocd", "pictor", "ilbm", "vbn", "ptx", "dds", "alias_pix",
})

_DEFAULT = 1  # AV_DISPOSITION_DEFAULT
_ATTACHED_PIC = 1024  # AV_DISPOSITION_ATTACHED_PIC: cover art inside an audio file


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe ``path``; raise ``MediaError`` when it is not usable audio or video."""
    p = os.fspath(path)
    try:
        size = os.path.getsize(p)
    except OSError as e:
        raise MediaError(STAGE_PROBE, f"cannot read file: {e.strerror or e}") from e
    if size == 0:
        raise MediaError(STAGE_PROBE, "empty file (0 bytes)")

    import av

    try:
        container = _open_explained(p)
    except av.error.FFmpegError as e:
        raise MediaError(STAGE_PROBE, f"not a media file: {av_message(e)}") from e
    except OSError as e:
        raise MediaError(STAGE_PROBE, f"cannot open file: {e.strerror or e}") from e

    with container:
        fmt = container.format.name
        jumps_possible = may_jump(container)
        if fmt == "tty":  # ffmpeg's ANSI-art demuxer claims plain text files
            raise MediaError(STAGE_PROBE, "not a video: text file (tty)")
        streams = tuple(_stream_info(s) for s in container.streams)
        video = _first(container.streams, "video")
        audio = _default_audio(container.streams)
        start_s = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        duration = _header_duration(container)
        # PyAV streams must not be touched once the container is closed (it crashes).
        timed = video if video is not None else audio
        timed_index = timed.index if timed is not None else None
        timed_rate = _exact_rate(video) if video is not None else None

        info: dict[str, Any] = {}
        if video is not None:
            cc = video.codec_context
            rate = timed_rate
            info.update(
                video_codec=_codec_name(video),
                width=int(cc.width) or None,
                height=int(cc.height) or None,
                sample_aspect=sample_aspect(video),
                frame_rate=f"{rate.numerator}/{rate.denominator}" if rate else None,
                frame_count=int(video.frames) if video.frames and video.frames > 0 else None,
                video_start_s=_stream_start(video, start_s),
                video_end_s=_stream_end(video, start_s),
            )
        if audio is not None:
            acc = audio.codec_context
            info.update(
                audio_codec=_codec_name(audio),
                audio_channels=int(acc.channels) or None,
                audio_sample_rate=int(acc.sample_rate) or None,
                audio_end_s=_stream_end(audio, start_s),
            )

    result = MediaInfo(path=p, size_bytes=size, container=fmt, duration_s=0.0, start_time_s=start_s,
                       streams=streams, **info)
    if not result.has_video and not result.has_audio:
        found = ", ".join(sorted({s.kind for s in streams})) or "nothing"
        raise MediaError(STAGE_PROBE, f"no audio or video streams (found: {found})")
    if is_still_image(result):
        raise MediaError(STAGE_PROBE, f"not a video: still image ({result.video_codec})")

    if duration is None or duration <= 0:
        duration = _scan_duration(p, timed_index, timed_rate)
    if duration is None or duration <= 0:
        raise MediaError(STAGE_PROBE, "unknown duration: no timed packets could be read")
    rotation = _rotation(p) if result.has_video else 0
    jumps = clock_jumps(p, timed_index) if jumps_possible else ()

    return replace(result, duration_s=float(duration), rotation=rotation, clock_jumps=jumps)


def sample_aspect(stream) -> Optional[str]:
    """The pixel aspect a player applies: the container's, else the codec's; None when
    square or unknown. DVDs and broadcast streams store 16:9 pictures 720 or 1440
    pixels wide, squeezed; a picture scaled without it shows everyone too thin."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar and sar > 0 and sar != 1 and Fraction(1, 8) <= sar <= 8:  # past that: a broken header
            return f"{sar.numerator}/{sar.denominator}"
        if sar == 1:
            return None
    return None


def _open_explained(path: str):
    """``av.open`` with FFmpeg's own log captured, so an error carries its cause.

    PyAV attaches FFmpeg's last log line to the exception only while logging is on;
    ``Capture`` keeps those lines off the console.
    """
    import av
    import av.logging

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture():
            return av.open(path, metadata_errors="ignore")
    finally:
        av.logging.set_level(previous)


# ASF (wmv, wma) keeps one play time per file, and ffmpeg gives it to every stream: a
# track that ends early would read as cut short.
_ONE_LENGTH_FOR_ALL = frozenset({"asf"})


def _stream_start(stream, container_start_s: float) -> Optional[float]:
    """Start of ``stream`` by its own header, on the container's clock; None when unknown."""
    if stream.time_base is None or stream.start_time is None:
        return None
    return max(0.0, float(stream.start_time * stream.time_base) - container_start_s)


def _stream_end(stream, container_start_s: float) -> Optional[float]:
    """End of ``stream`` by its own header, on the container's clock; None when unknown."""
    if stream.time_base is None or stream.container.format.name in _ONE_LENGTH_FOR_ALL:
        return None
    start = stream.start_time if stream.start_time is not None else 0
    if stream.duration is not None and stream.duration > 0:
        return float((start + stream.duration) * stream.time_base) - container_start_s
    # Matroska keeps no length per track, but its muxers (ffmpeg, mkvmerge) tag each
    # track with one: without it a video that stops before its audio reads as cut short
    tagged = _tag_seconds(stream.metadata)
    return None if tagged is None else float(start * stream.time_base) + tagged - container_start_s


_DURATION_TAG = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")


def _tag_seconds(metadata) -> Optional[float]:
    for key, value in (metadata or {}).items():
        if key.upper() == "DURATION" or key.upper().startswith("DURATION-"):
            m = _DURATION_TAG.match(str(value).strip())
            if m:
                seconds = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
                return seconds if seconds > 0 else None
    return None


def is_still_image(info: MediaInfo) -> bool:
    """True for a photo in disguise: an image demuxer, or one frame of an image codec."""
    if info.has_audio or not info.has_video:
        return False
    if info.container == "image2" or info.container.endswith("_pipe"):
        return True
    if info.video_codec in _IMAGE_CODECS:
        # An animated GIF/WebP/APNG or an MJPEG AVI is a real video; one frame is not.
        return info.frame_count is not None and info.frame_count <= 1
    return False


def av_message(e: BaseException) -> str:
    """PyAV's own words for an error, without the errno and the repeated file name."""
    text = str(getattr(e, "strerror", None) or e or type(e).__name__)
    # FFmpeg's last log line says *why* ("moov atom not found"); PyAV keeps it on the error
    log = getattr(e, "log", None)
    if isinstance(log, tuple) and len(log) == 3 and log[2] and str(log[2]).strip() not in text:
        text = f"{text} ({str(log[2]).strip()})"
    return text


# --- helpers ------------------------------------------------------------------------

def _first(streams, kind: str):
    for s in streams:
        if s.type == kind and not (kind == "video" and _is_cover(s)):
            return s
    return None


def _default_audio(streams):
    """The audio stream a player would pick: the one flagged default, else the first."""
    audio = [s for s in streams if s.type == "audio"]
    for s in audio:
        if int(s.disposition) & _DEFAULT:
            return s
    return audio[0] if audio else None


def _is_cover(stream) -> bool:
    try:
        return bool(int(stream.disposition) & _ATTACHED_PIC)
    except (TypeError, ValueError):
        return False


def _codec_name(stream) -> Optional[str]:
    """The codec (``av1``), not the decoder that PyAV picked for it (``libdav1d``)."""
    cc = getattr(stream, "codec_context", None)
    if cc is None:
        return None
    codec = getattr(cc, "codec", None)
    name = getattr(codec, "canonical_name", None) or getattr(cc, "name", None)
    return str(name) if name else None


def _stream_info(stream) -> StreamInfo:
    kind = stream.type
    if kind == "video" and _is_cover(stream):
        kind = "attachment"
    codec = _codec_name(stream)  # None for data and attachment streams (no codec context)
    lang = stream.metadata.get("language") if stream.metadata else None
    return StreamInfo(index=int(stream.index), kind=str(kind), codec=codec,
                      language=None if lang in (None, "", "und") else str(lang))


def _exact_rate(stream) -> Optional[Fraction]:
    average, guessed = stream.average_rate, stream.guessed_rate
    # Some demuxers (raw DV) give the clock's tick rate as the average: 60000 fps for
    # NTSC DV, whose pictures come every 1001/30000 s, as the guessed rate says.
    ticks = 1 / Fraction(stream.time_base) if stream.time_base else None
    if average and guessed and guessed > 0 and average == ticks != guessed:
        return Fraction(guessed)
    for rate in (average, guessed):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None


def _header_duration(container) -> Optional[float]:
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    longest = None
    for s in container.streams:
        if s.duration and s.time_base:
            d = float(s.duration * s.time_base)
            longest = d if longest is None else max(longest, d)
    return longest


def _scan_duration(path: str, index: Optional[int], rate: Optional[Fraction]) -> Optional[float]:
    """Duration from the packets themselves, for raw streams whose header has none.

    Reads packets without decoding them. Packets without timestamps (raw H.264) are
    counted at their own duration, or at the stream's frame rate.
    """
    if index is None:
        return None
    import av

    end = Fraction(0)
    counted = Fraction(0)
    with av.open(path, metadata_errors="ignore") as c:
        s = c.streams[index]
        tb = s.time_base or Fraction(1, 1)
        try:
            for packet in c.demux(s):
                if packet.size == 0:
                    continue
                dur = packet.duration * tb if packet.duration else (1 / rate if rate else Fraction(0))
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    end = max(end, ts * tb + dur)
                counted += dur
        except av.error.FFmpegError:
            pass  # a damaged tail still leaves the duration of what came before it
    start = Fraction(s.start_time) * tb if s.start_time is not None else Fraction(0)
    best = max(end - start, counted)
    return float(best) if best > 0 else None


def _rotation(path: str) -> int:
    """Degrees clockwise to turn the coded picture upright, from the display matrix.

    PyAV 18 exposes the display matrix only on decoded frames (``frame.rotation``, the
    matrix angle, counter-clockwise), so one frame is decoded. Old muxers wrote a
    ``rotate`` tag instead, which is already clockwise.
    """
    import av

    tag = None
    try:
        with av.open(path, metadata_errors="ignore") as c:
            video = _first(c.streams, "video")
            if video is None:
                return 0
            tag = (video.metadata or {}).get("rotate")
            for frame in c.decode(video):
                ccw = getattr(frame, "rotation", 0) or 0
                if ccw:
                    return _snap(-ccw)
                break
    except av.error.FFmpegError:
        pass  # an undecodable first frame is decode's to report; fall back to the tag
    if tag:
        try:
            return _snap(float(tag))
        except ValueError:
            return 0
    return 0


def _snap(degrees_cw: float) -> int:
    return int(round(degrees_cw / 90.0)) % 4 * 90
