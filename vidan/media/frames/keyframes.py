"""The keyframe path: sample keyframes, scan reference frames, decode nothing else.

PyAV only, whatever ``cfg.backend`` says. It avoids decoding what the sampler does not need
when the file allows it: when every keyframe of the decoded range is at most
``MAX_KEY_GAP_S`` from the next (seen from the packet index, without decoding), each
sampling time gets the nearest keyframe, reported at that keyframe's own presentation
time; the shot scan decodes only reference frames (the frames skipped are never shown
to anything else) and skips the deblocking filter on all but keyframes. Files with
keyframes further apart, AVI (no presentation times) and ``fast=False`` go the full-decode
way, through the configured backend (decord or PyAV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Optional

import numpy as np

from vidan.config import FrameConfig
from vidan.media.frames.backend import DecodedFrames
from vidan.media.frames.clock import _SAME_FRAME_S, _call, _Clock, _frames_expected, _Picker
from vidan.media.frames.container import _decode_clock, _seconds, _video_stream
from vidan.media.frames.images import scan_dims, upright
from vidan.media.frames.pyav_backend import _PyAVDecoder, _set_threads
from vidan.records import MediaInfo, Span

# The keyframe path is taken when no two keyframes are further apart than this: a sample
# is then never more than half of it from the time it stands for.
MAX_KEY_GAP_S = 2.0
_KEY_GAP_SLACK_S = 0.01  # "every 2 s" in a millisecond time base is 2.000 or 2.001 s


class _Sent:
    """The callbacks as the keyframe path calls them, remembering how far each got."""

    def __init__(self, on_scan, on_sample):
        self.on_scan, self.on_sample = on_scan, on_sample
        self.scan_t = self.sample_t = -math.inf

    def scan(self, t: float, img: np.ndarray) -> None:
        self.on_scan(t, img)
        self.scan_t = t

    def sample(self, t: float, img: np.ndarray) -> None:
        self.on_sample(t, img)
        self.sample_t = t

    @staticmethod
    def after(callback, t0: float):
        if callback is None:
            return None
        return lambda t, img: callback(t, img) if t > t0 + _SAME_FRAME_S else None


@dataclass
class _Index:
    times: np.ndarray  # every packet's presentation time, display order
    keys: np.ndarray  # the keyframes' times
    ends: bool  # the stream ended before the range did


def _packet_index(path: str, info: MediaInfo, start: float, end: float) -> Optional[_Index]:
    """Presentation times of the packets from the keyframe before ``start`` to past ``end``,
    read without decoding; None when the file is not one the keyframe path can trust."""
    import av

    t0 = _seconds(info.start_time_s)
    with av.open(path, metadata_errors="ignore") as container:
        stream = _video_stream(container)
        if stream is None or _decode_clock(container.format.name) or stream.codec_context.name in _KEY_PATH_BAD:
            return None
        tb = stream.time_base or Fraction(1, 90000)
        _seek(container, stream, start, t0, tb)
        times, keys = [], []
        ends = True
        try:
            for packet in container.demux(stream):
                if not packet.size and packet.pts is None:
                    continue  # the demuxer's last, empty packet
                if packet.pts is None:
                    return None  # times would have to be guessed: the full decode does that
                t = float(packet.pts * tb - t0)
                times.append(t)  # an empty packet with a time is a frame: the last picture stays
                if not packet.size:
                    continue
                if packet.is_keyframe:
                    keys.append(t)
                    if t > end + _SAME_FRAME_S:  # decode order is display order for keyframes
                        ends = False
                        break
        except av.error.FFmpegError:
            return None
    return _Index(np.sort(np.asarray(times)), np.asarray(keys), ends)


# Decoders whose keyframes are not enough to show a picture on their own, or whose
# "reference" flag does not mean what the scan needs: the full decode reads them.
_KEY_PATH_BAD = {"rawvideo"}

def _seek(container, stream, start: float, t0: Fraction, tb: Fraction) -> None:
    if start > 0:
        target = (Fraction(start) + t0) / tb
        container.seek(max(0, math.floor(target)), stream=stream, backward=True)


def _keys_close(index: _Index, start: float, end: float) -> bool:
    """Whether keyframes cover [start, end) no further apart than MAX_KEY_GAP_S."""
    keys, limit = index.keys, MAX_KEY_GAP_S + _KEY_GAP_SLACK_S
    if not len(keys) or keys[0] > max(start, float(index.times[0])) + _SAME_FRAME_S:
        return False  # the seek landed after the start: no keyframe before it
    last = float(index.times[-1]) if index.ends else end
    keys = keys[(keys < end) & (keys >= keys[keys <= max(start, keys[0])][-1])]  # from the one before start
    edges = np.r_[keys, min(end, last)]
    return bool(np.all(np.diff(edges) <= limit))


def _sample_keys(span: Span, cfg: FrameConfig, keys: np.ndarray) -> list[float]:
    """The keyframe nearest each sampling time, each once; ties go to the earlier one."""
    inside = keys[(keys >= span.start_s - _SAME_FRAME_S) & (keys < span.end_s)]
    if not len(inside):
        return []
    clock = _Clock(span.start_s, cfg.sample_fps, 0.5)
    if clock.next() >= span.end_s:
        clock = _Clock(span.start_s, cfg.sample_fps, 0.0)
    chosen: list[float] = []
    while clock.next() < span.end_s:
        t = clock.next()
        i = int(np.searchsorted(inside, t))
        near = [inside[j] for j in (i - 1, i) if 0 <= j < len(inside)]
        k = float(min(near, key=lambda x: (abs(x - t), x)))
        if not chosen or k > chosen[-1] + _SAME_FRAME_S:
            chosen.append(k)
        clock.k += 1
    return chosen


def _keyframe_path(path: str, info: MediaInfo, span: Span, cfg: FrameConfig, size, detect,
                   scan_span: Optional[Span], sent: _Sent) -> Optional[DecodedFrames]:
    """``decode_part`` from keyframes and reference frames; None when the file does not allow it."""
    import av
    from av.video.reformatter import VideoReformatter

    scanning = sent.on_scan is not None
    scan = scan_span if (scan_span is not None and scanning) else span
    start, end = min(span.start_s, scan.start_s), max(span.end_s, scan.end_s)
    index = _packet_index(path, info, start, end)
    if index is None or not len(index.times) or not _keys_close(index, start, end):
        return None
    wanted = _sample_keys(span, cfg, index.keys)
    if not wanted:
        return None

    # frame counts and coverage notes from the packet index: every frame has a packet
    counter = _Picker(span, cfg, None, model=False)
    for t in index.times:
        if not counter.feed(float(t), None):
            break
    scanner = _Picker(span, cfg, sent.scan, scan_span, model=False) if scanning else None

    rotation = info.rotation
    scan_size = scan_dims(size, cfg.scan_width)
    model_fmt, scan_fmt, detect_fmt = VideoReformatter(), VideoReformatter(), VideoReformatter()

    def rgb(fmt, frame, want):
        w, h = (want[1], want[0]) if rotation in (90, 270) else want
        img = fmt.reformat(frame, w, h, "rgb24", interpolation="AREA").to_ndarray()
        return upright(img, rotation)

    times: list[float] = []
    images: list[np.ndarray] = []
    notes: list[str] = []
    pending = list(wanted)
    with av.open(path, metadata_errors="ignore") as container:
        stream = _video_stream(container)
        _set_threads(stream)
        cc = stream.codec_context
        if scanning:
            # Non-reference frames are never used to predict others: skipping them costs
            # the scan at most one frame of its time grid. Deblocking is skipped on all
            # but keyframes: the model frames are keyframes, the scan is 96 px wide.
            cc.skip_frame = "NONREF"
            cc.options = {"skip_loop_filter": "nokey"}
        else:
            cc.skip_frame = "NONKEY"
        tb = stream.time_base or Fraction(1, 90000)
        t0 = _seconds(info.start_time_s)
        _seek(container, stream, start, t0, tb)
        dec = _PyAVDecoder(container, stream, t0, size, rotation)
        frames = dec.frames(keys_only=not scanning)
        try:
            for t, _, _ in frames:
                frame = dec.frame
                scan_done = scanner is None or not scanner.feed(
                    t, None, partial(rgb, scan_fmt, frame, scan_size))
                while pending and pending[0] < t - _SAME_FRAME_S:
                    pending.pop(0)  # that keyframe did not decode
                if pending and abs(pending[0] - t) <= _SAME_FRAME_S:
                    pending.pop(0)
                    times.append(t)
                    images.append(rgb(model_fmt, frame, size))
                    if detect is not None:
                        _call(sent.sample, t, rgb(detect_fmt, frame, detect))
                if scan_done and not pending:
                    break
        finally:
            frames.close()
        dec.report(notes)
    if scanner is not None:
        scanner.finish()
    missed = len(wanted) - len(times)
    if missed:
        notes.append(f"{missed} of {len(wanted)} sampled keyframes could not be decoded")
    notes.extend(counter.coverage_notes(info))
    return DecodedFrames(
        times_s=np.asarray(times, np.float64),
        images=np.stack(images) if images else np.zeros((0, size[1], size[0], 3), np.uint8),
        backend="pyav", frames_decoded=counter.frames_decoded,
        frames_expected=_frames_expected(info, span), notes=notes)
