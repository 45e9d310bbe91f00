"""The decord backend: every frame of the span, decoded by decord.

decord readers leak when kept (dmlc/decord #157), so each is dropped when its span is
read. Its frame times are checked before use: times that cannot be true raise
``TimestampError``, and ``decode_part`` lets the PyAV backend carry on.
"""

from __future__ import annotations

from fractions import Fraction
from functools import partial
from typing import Optional

import numpy as np

from vidan.media.frames import backend
from vidan.media.frames.container import _decode_clock, _reorder_depth, _seconds, _video_stream
from vidan.records import STAGE_DECODE, MediaError


class DecordBackend:
    name = "decord"

    def iter_frames(self, path, info, span, size, notes, read_size=None):
        """``read_size``: decode at this (larger) size; model frames are scaled down from it."""
        import decord

        decord.logging.set_level(decord.logging.ERROR)  # its ffmpeg warns on every B-frame
        tb, stream_start = _stream_clock(path)
        start = _seconds(info.start_time_s)
        # decord 0.6 applies the display matrix itself and scales after rotating, so it
        # is asked for the upright size and its frames are not turned again (checked
        # against ffmpeg's own upright picture in tests/test_frames.py).
        read = read_size or size
        vr = decord.VideoReader(path, ctx=decord.cpu(0), width=read[0], height=read[1],
                                num_threads=backend.DECODE_THREADS or 0)
        try:
            n = len(vr)
            if n == 0:
                return
            # (start, end) per frame, seconds from the video stream's own start_time,
            # as float32: snap back to the stream's time base to compare exactly.
            raw = np.asarray(vr.get_frame_timestamp(np.arange(n)), np.float64)[:, 0]
            _check_timestamps(raw, info.duration_s)
            ticks = np.round(raw / float(tb)).astype(np.int64) + stream_start
            # from the frame before the span, so the caller sees where the stream is
            first = max(0, int(np.searchsorted(raw, span.start_s + float(start - stream_start * tb))) - 1)
            for i in range(first, n):
                t = float(int(ticks[i]) * tb - start)
                yield t, partial(_decord_rgb, vr, i, size, read)
                if t >= span.end_s:
                    return
        finally:
            del vr  # decord readers leak when kept (dmlc/decord #157)


def _decord_rgb(vr, index: int, size, read, want: Optional[tuple[int, int]] = None) -> np.ndarray:
    img = vr[index].asnumpy()
    want = tuple(want or size)
    if want == tuple(read):
        return img
    import cv2

    shrink = want[0] <= img.shape[1]
    return cv2.resize(img, want, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _stream_clock(path: str) -> tuple[Fraction, int]:
    """Time base and start pts of the video stream decord reads (the "best" one)."""
    import av

    with av.open(path, metadata_errors="ignore") as c:
        try:
            s = c.streams.best("video")
        except (AttributeError, ValueError):
            s = _video_stream(c)
        if s is None:
            raise MediaError(STAGE_DECODE, "no video stream")
        if _decode_clock(c.format.name) and _reorder_depth(s.codec_context):
            # decord times frames by ffmpeg's guessed presentation times
            raise TimestampError(f"{c.format.name} with reordered frames has no presentation timestamps")
        return Fraction(s.time_base or Fraction(1, 90000)), int(s.start_time or 0)


class TimestampError(ValueError):
    """A backend reported frame times that cannot be true."""


def _check_timestamps(ts: np.ndarray, duration_s: float) -> None:
    where = f"first {np.array2string(ts[:4], precision=3)}"
    if not np.all(np.isfinite(ts)):
        raise TimestampError(f"timestamps are not numbers ({where})")
    if len(ts) > 1 and np.all(ts == 0):
        raise TimestampError("all timestamps are zero")
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        raise TimestampError(f"timestamps do not increase ({where})")
    if ts[0] < -1.0 or ts[-1] > 2 * duration_s + 10.0:
        raise TimestampError(f"timestamps outside the file's {duration_s:.1f} s ({where})")
