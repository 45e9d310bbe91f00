"""Audio samples for the speech and sound models: float32 mono 16 kHz, from ffmpeg.

The command is built with ffmpeg-python and run by ``subprocess.run`` on the compiled
argument list with a timeout (ffmpeg-python's own ``.run()`` has none, and a shell is
never involved). Times follow the rest of vidan: seconds from the container's start.
ffmpeg keeps the file's own timestamps (``-copyts``), seeks to
``span.start_s`` past the container start, and ``aresample`` with ``first_pts`` pads with
silence when the audio stream starts after the span does (and fills gaps inside it),
so sample ``i`` is always at ``span.start_s + i / 16000``.

Some streams send no packets for a while (recorders that drop silence, a hole in a
stream). A span that ends in such a gap is padded with silence to its end: only when
no packet follows does the audio really end there, and only an end before the one the
stream's header promises is a loss worth a note.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
from typing import Optional, Union

import numpy as np

from vidan.media.ffmpeg_bin import ffmpeg_exe
from vidan.records import STAGE_AUDIO, MediaError, MediaInfo, Span

SAMPLE_RATE = 16000
# Audio that stops this much before the span ends is worth a note in the report.
_SHORT_TOLERANCE_S = 0.5
_MAX_ERROR_LINES = 8
_MAX_ERROR_CHARS = 2000
_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+")
# aresample counts first_pts in its *input* rate, so resample to 16 kHz first and pad in
# a second pass; min_hard_comp makes gaps of 10 ms and more become silence, not drift.
_ALIGN = "aresample={rate},aresample=async=1:min_hard_comp=0.01:first_pts={first}"


def extract_audio(path: Union[str, os.PathLike], info: MediaInfo, span: Optional[Span] = None, *,
                  stream: Optional[int] = None, timeout_s: float = 600.0,
                  own: Optional[Span] = None) -> tuple[np.ndarray, list[str]]:
    """Samples of ``span`` (whole file when None) and notes about what was lost or chosen.

    ``stream`` is an absolute stream index; by default the audio stream marked default,
    else the first one. ``own`` is the stretch of ``span`` this call answers for, when
    ``span`` adds context around a part: an early end of the audio is noted only by the
    part it falls in, so overlapping parts do not both report it.
    Raises ``MediaError(STAGE_AUDIO, ffmpeg's own words)``.
    """
    path = os.fspath(path)
    index, notes = _choose_stream(path, info, stream)
    start = max(0.0, span.start_s) if span is not None else 0.0
    end = span.end_s if span is not None else info.duration_s
    # a stereo track comes as two channels, mixed here: see _to_mono
    channels = 2 if stream is None and info.audio_channels == 2 else 1
    args = _command(path, info, index, start, end if span is not None else None, channels)
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MediaError(STAGE_AUDIO, f"ffmpeg timed out after {timeout_s:g} s") from None
    except OSError as e:
        raise MediaError(STAGE_AUDIO, f"could not run ffmpeg ({args[0]}): {e}") from e
    errors = _stderr_lines(proc.stderr)
    if proc.returncode != 0:
        # a failure is explained by whatever ffmpeg said, whichever stream it named
        raise MediaError(STAGE_AUDIO, errors or _stderr_lines(proc.stderr, audio_only=False)
                         or f"ffmpeg exited with code {proc.returncode} and said nothing")
    samples = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32, copy=False)
    if channels == 2:
        samples = _to_mono(samples[: len(samples) // 2 * 2].reshape(-1, 2))
    if errors:
        # ffmpeg skips corrupt packets and carries on: the samples are usable but incomplete
        notes.append(f"ffmpeg reported: {errors}")
    got_end = start + len(samples) / SAMPLE_RATE
    if got_end < end - _SHORT_TOLERANCE_S:
        # ffmpeg fills gaps between packets (aresample) but not one that runs past the
        # span's end: a stream that sends no packets during silence stops short of it.
        later = _packet_after(path, info, index, got_end + _SHORT_TOLERANCE_S)
        if later:
            samples = np.concatenate([samples, np.zeros(int(round((end - start) * SAMPLE_RATE)) - len(samples),
                                                        np.float32)])
            return samples, notes
        if later is False and len(samples) == 0 and _packet_after(path, info, index, 0.0) is False:
            notes.append("the audio stream holds no packets")
            return samples, notes
    # The audio really ends here. Only the stream's own end, from its header, says what
    # the file should hold: a track shorter than the video is how many files are made,
    # not a loss. Containers without per-stream durations (Matroska) leave a cut-short
    # track to the video check.
    want_end = info.audio_end_s
    if own is not None and not own.start_s - 1e-6 <= got_end < own.end_s:
        return samples, notes
    if want_end is not None and got_end < min(end, want_end) - _SHORT_TOLERANCE_S:
        if len(samples) == 0:
            notes.append(f"no audio between {start:.1f} s and {min(end, want_end):.1f} s")
        else:
            notes.append(f"audio ends at {got_end:.1f} s of {want_end:.1f} s")
    return samples, notes


def _packet_after(path: str, info: MediaInfo, index: int, t: float) -> Optional[bool]:
    """Whether stream ``index`` has a packet that starts at or after ``t`` (vidan's clock).

    Reads packets only (nothing is decoded) from the last one before ``t``. None when
    the file cannot be read this way; the caller then keeps what ffmpeg gave.
    """
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams[index]
            tb = stream.time_base
            absolute = info.start_time_s + t
            container.seek(max(0, int(absolute / tb)), stream=stream, backward=True)
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size and float(packet.pts * tb) >= absolute - 1e-3:
                    return True
    except (av.FFmpegError, OSError, IndexError, ValueError):
        return None
    return False


# Mixed, two channels that are each this much louder than their mix are one signal with
# one side inverted (a miswired microphone, some tape transfers): their mix is near silence.
_CANCEL_RATIO = 4.0
_AUDIBLE_RMS = 1e-3  # -60 dBFS: below this there is nothing to lose


def _to_mono(stereo: np.ndarray) -> np.ndarray:
    """Mix two channels into one as ffmpeg does, unless that cancels what they carry: then
    the louder channel alone (nothing is lost, so no note)."""
    # ffmpeg's own stereo-to-mono mix (libswresample): each side at -3 dB, summed
    mono = (stereo[:, 0] + stereo[:, 1]) * np.float32(math.sqrt(0.5))
    if len(stereo) == 0:
        return mono
    rms = np.sqrt(np.mean(np.square(stereo, dtype=np.float64), axis=0))
    loud = int(np.argmax(rms))
    mixed = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if rms[loud] >= _AUDIBLE_RMS and mixed * _CANCEL_RATIO < rms[loud]:
        return np.ascontiguousarray(stereo[:, loud])
    return mono


def _command(path: str, info: MediaInfo, index: int, start: float, end: Optional[float],
             channels: int = 1) -> list[str]:
    import ffmpeg

    # Keep the file's own timestamps (-copyts): when only the audio stream is mapped,
    # ffmpeg otherwise rebases time on that stream's first packet and a late-starting
    # track slides to 0. first_pts then pins sample 0 to the span start (absolute time),
    # padding with silence up to the first real sample.
    t0 = info.start_time_s + start
    input_kwargs: dict = {"copyts": None}
    if start > 0:
        input_kwargs["ss"] = f"{start:.6f}"  # ffmpeg counts -ss from the container start, as vidan does
    if end is not None:
        input_kwargs["t"] = f"{max(0.0, end - start):.6f}"
    # "file:" keeps a name such as "-x.mp4" or "concat:a|b" from being read as an option or protocol
    source = "file:" + os.path.abspath(path)
    out = ffmpeg.input(source, **input_kwargs).output(
        "pipe:", format="f32le", acodec="pcm_f32le", ac=channels, ar=SAMPLE_RATE, map=f"0:{index}",
        af=_ALIGN.format(rate=SAMPLE_RATE, first=round(t0 * SAMPLE_RATE)), vn=None, sn=None, dn=None)
    return ffmpeg.compile(out.global_args("-nostdin", "-hide_banner", "-loglevel", "error"), cmd=ffmpeg_exe())


def _choose_stream(path: str, info: MediaInfo, stream: Optional[int]) -> tuple[int, list[str]]:
    audio = [s for s in info.streams if s.kind == "audio"]
    if not audio:
        raise MediaError(STAGE_AUDIO, "no audio stream")
    if stream is not None:
        if not any(s.index == stream for s in audio):
            raise MediaError(STAGE_AUDIO, f"stream #{stream} is not an audio stream; audio streams: "
                             + ", ".join(f"#{s.index}" for s in audio))
        return stream, []
    if len(audio) == 1:
        return audio[0].index, []
    default = _default_audio_stream(path)
    if default is not None and any(s.index == default for s in audio):
        return default, []
    return audio[0].index, []


def _default_audio_stream(path: str) -> Optional[int]:
    """Index of the audio stream with the default disposition; PyAV reads the header only."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            for s in container.streams.audio:
                if s.disposition & av.stream.Disposition.default:
                    return s.index
    except (av.FFmpegError, OSError) as e:
        raise MediaError(STAGE_AUDIO, f"could not read the audio streams: {e}") from e
    return None


def _stderr_lines(stderr: bytes, *, audio_only: bool = True) -> str:
    """ffmpeg's complaints, one line each, repeats counted, most recent last.

    ``audio_only`` drops what the decoders of other streams said: ffmpeg decodes a little
    of every stream to learn its format before it reads the audio, and a video that
    starts mid-GOP or a broken subtitle says so in every audio extraction, which would
    blame the audio.
    """
    # ffmpeg names each component by its memory address ("[aac @ 0x55d1c3a0]"): without
    # it the same fault reads the same in every run and in both parts that heard it
    text = _ADDRESS.sub("", stderr.decode("utf-8", errors="replace"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _REPEATED.match(ln.strip())]
    if audio_only:
        lines = [ln for ln in lines if not _other_stream(ln)]
    counted: dict[str, int] = {}
    for ln in lines:  # dicts keep the order of first appearance; move each to its latest
        counted[ln] = counted.pop(ln, 0) + 1
    shown = [ln if n == 1 else f"{ln} (x{n})" for ln, n in counted.items()]
    text = " | ".join(shown[-_MAX_ERROR_LINES:])
    return text[-_MAX_ERROR_CHARS:]


_REPEATED = re.compile(r"^Last message repeated \d+ times$")
_TAG = re.compile(r"^\[([^\]\s]+)\]")


def _other_stream(line: str) -> bool:
    """True for a line from a video or subtitle decoder (``[h264] no frame!``), or from
    ffmpeg's own reader of such a stream (``[vist#0:0/h264]``)."""
    m = _TAG.match(line)
    if not m:
        return False
    tag = m.group(1)
    if tag.startswith(("vist#", "sist#", "dist#")):
        return True
    return _decoder_kind(tag) in ("video", "subtitle")


@functools.lru_cache(maxsize=256)
def _decoder_kind(name: str) -> Optional[str]:
    from av.codec import Codec

    try:
        return Codec(name, "r").type
    except Exception:  # a demuxer, filter or muxer: not a decoder
        return None
