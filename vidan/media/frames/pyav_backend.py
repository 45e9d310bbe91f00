"""The PyAV backend: every frame of the span, decoded by ffmpeg through PyAV.

Packets the decoder or the demuxer rejects are skipped and counted; frames without
timestamps are placed by decode order at the stream rate; AVI frames are timed by the
decode clock. Each frame becomes RGB only when chosen, scaled by swscale straight from
the decoded planes. ``_PyAVDecoder`` is shared with the keyframe path.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction
from functools import partial
from typing import Callable, Iterator, Optional

import numpy as np

from vidan.media.frames import backend
from vidan.media.frames.backend import _error_text
from vidan.media.frames.container import _decode_clock, _reorder_depth, _seconds, _video_stream
from vidan.media.frames.images import upright
from vidan.records import STAGE_DECODE, MediaError


def _with_scan(t: float, get, scan_size: Optional[tuple[int, int]]):
    return (t, get) if scan_size is None else (t, get, partial(get, scan_size))


def _pyav_rgb(frame, size: tuple[int, int], rotation: int, want: Optional[tuple[int, int]] = None) -> np.ndarray:
    w, h = want or size
    w, h = (h, w) if rotation in (90, 270) else (w, h)
    # swscale scales straight from the decoded YUV planes to model size
    img = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
    return upright(img, rotation)


def _set_threads(stream) -> None:
    if backend.DECODE_THREADS:
        stream.thread_count = backend.DECODE_THREADS
    stream.thread_type = "AUTO"


class _PyAVDecoder:
    """Decode one video stream, skipping packets the decoder or demuxer rejects."""

    MAX_DEMUX_ERRORS = 100  # in a row, with no packet read in between: give up

    def __init__(self, container, stream, start: Fraction, size, rotation: int):
        from vidan.media.probe import _exact_rate

        self.container, self.stream = container, stream
        self.decode_clock = _decode_clock(container.format.name)
        self.tb = stream.time_base or Fraction(1, 90000)
        self.rate = _exact_rate(stream) or Fraction(25)
        self.start, self.size, self.rotation = start, size, rotation
        self.bad_packets = 0
        self.last_error = ""
        self.untimed = 0
        self.timed = 0
        self.gave_up = ""
        self._last: Optional[Fraction] = None
        self.frame = None  # the latest frame handed out

    def frames(self, keys_only: bool = False) -> Iterator[tuple[float, Callable[[], np.ndarray], bool]]:
        import av

        errors_in_row = 0
        # An empty packet with a time is a frame the encoder did not store because the
        # picture did not change (Theora in Ogg): the picture before stays, shown from
        # that time. A decoder rejects it as invalid, but it is neither damage nor a
        # missing frame. Its time waits here until the frames before it are out (a
        # threaded decoder hands frames out a few packets late).
        repeats: list[int] = []
        while True:
            try:
                for packet in self.container.demux(self.stream):
                    errors_in_row = 0
                    if not packet.size and packet.pts is not None and not self.decode_clock:
                        if not keys_only:
                            bisect.insort(repeats, packet.pts)
                        continue
                    if keys_only and not packet.is_keyframe and packet.size:
                        continue
                    try:
                        decoded = packet.decode()
                    except av.error.EOFError:
                        continue
                    except av.error.FFmpegError as e:
                        self.bad_packets += 1
                        self.last_error = _error_text(e)
                        continue
                    for frame in decoded:
                        ts = frame.pts if frame.pts is not None else frame.dts
                        while repeats and ts is not None and repeats[0] < ts:
                            pts = repeats.pop(0)
                            if self.frame is not None:  # none before the first picture
                                yield self._repeat(pts)
                        yield self._timed(frame)
                if self.frame is not None:
                    for pts in repeats:
                        yield self._repeat(pts)
                return
            except av.error.FFmpegError as e:  # the demuxer resyncs on the next read
                self.bad_packets += 1
                self.last_error = _error_text(e)
                errors_in_row += 1
                if errors_in_row >= self.MAX_DEMUX_ERRORS:
                    self.gave_up = self.last_error
                    return

    def _timed(self, frame):
        if self.decode_clock:
            # A frame leaves the decoder, in display order, when the packet ``depth`` ticks
            # after its own slot goes in, and carries that packet's tick: one tick per
            # frame, gaps (dropped-frame chunks) kept.
            ts = frame.dts
            if ts is not None:
                ts -= _reorder_depth(self.stream.codec_context)
        else:
            ts = frame.pts if frame.pts is not None else frame.dts
        if ts is not None:
            self.timed += 1
            at = ts * self.tb - self.start
            has_time = True
        elif self.decode_clock and self._last is not None:
            # the last ``depth`` frames come out after the last packet: one tick each
            at = self._last + (frame.duration * self.tb if frame.duration else 1 / self.rate)
            has_time = True
        else:
            # Raw streams and broken AVIs: place the frame one duration after the last.
            self.untimed += 1
            step = frame.duration * self.tb if frame.duration else 1 / self.rate
            at = self._last + step if self._last is not None else Fraction(0)
            has_time = False
        self._last = at
        self.frame = frame
        return float(at), partial(_pyav_rgb, frame, self.size, self.rotation), has_time

    def _repeat(self, pts: int):
        at = pts * self.tb - self.start
        self.timed += 1
        self._last = at
        return float(at), partial(_pyav_rgb, self.frame, self.size, self.rotation), True

    def report(self, notes: list[str]) -> None:
        if self.bad_packets:
            notes.append(f"{self.bad_packets} corrupt packets skipped ({self.last_error})")
        if self.gave_up:
            notes.append(f"stopped reading after {self.MAX_DEMUX_ERRORS} demuxer errors in a row ({self.gave_up})")
        if self.untimed and not self.timed:
            notes.append("no presentation timestamps; times from decode order at the stream rate")
        elif self.untimed:
            notes.append(f"{self.untimed} frames without timestamps placed by decode order")


class PyAVBackend:
    name = "pyav"

    # Seek this far before the span start first; further back (then from the start)
    # when the demuxer lands after it, as MPEG-TS and some AVIs do.
    SEEK_MARGINS_S = (1.0, 30.0, None)

    def iter_frames(self, path, info, span, size, notes, scan_size=None):
        """``scan_size``: also give each frame a getter of its picture at this size (the
        shot scan's), converted from the decoded planes rather than shrunk from the
        model's picture: most scanned frames are never model frames."""
        import av

        start = _seconds(info.start_time_s)
        margins = self.SEEK_MARGINS_S if span.start_s > 0 else (None,)
        attempt = 0
        while attempt < len(margins):
            margin = margins[attempt]
            attempt += 1
            with av.open(path, metadata_errors="ignore") as container:
                stream = _video_stream(container)
                if stream is None:
                    raise MediaError(STAGE_DECODE, "no video stream")
                _set_threads(stream)
                dec = _PyAVDecoder(container, stream, start, size, info.rotation)
                if margin is not None:
                    target = (Fraction(span.start_s - margin) + start) / dec.tb
                    try:
                        container.seek(max(0, math.floor(target)), stream=stream, backward=True)
                    except av.error.FFmpegError:
                        attempt = len(margins) - 1  # not seekable: read from the start
                        continue
                frames = dec.frames()
                chosen = False  # this attempt is the one whose losses get reported
                try:
                    first = next(frames, None)
                    if margin is not None:
                        if first is None:
                            if attempt == 1:  # nothing from here on: look further back once
                                continue
                            chosen = True
                            return  # the stream ends before the span
                        if not first[2]:  # no timestamps: only counting from the start works
                            attempt = len(margins) - 1
                            continue
                        if first[0] > span.start_s:  # landed after the span start
                            continue
                    chosen = True
                    if first is not None:
                        yield _with_scan(first[0], first[1], scan_size)
                        for t, get, _ in frames:
                            yield _with_scan(t, get, scan_size)
                    return
                finally:
                    frames.close()  # before the container closes under it
                    if chosen:
                        dec.report(notes)
