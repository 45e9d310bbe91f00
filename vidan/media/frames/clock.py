"""Which frame stands for each sampling time, and what the frames seen say about coverage.

Which frames are kept is decided here, not in the backends: for each sampling time the
frame *displayed* at that time (the last one whose presentation time is not after it).
That needs one frame of look-ahead, so backends hand out frames lazily and only the
chosen ones are ever converted to RGB, and then straight at model size in the decoder:
a 4K frame never becomes a full-size RGB array.

The same picker counts the frames of the span and finds holes in it, for the notes.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Optional

import numpy as np

from vidan.config import FrameConfig
from vidan.media.frames.container import _decode_clock
from vidan.media.frames.images import scan_image
from vidan.records import MediaInfo, Span

_SAME_FRAME_S = 1e-4  # two times closer than this are the same frame (backends round differently)


class _CallbackError(Exception):
    """Carries an exception raised by ``on_scan`` or ``on_sample`` past the backend fallback."""


def _call(callback, t: float, img: np.ndarray) -> None:
    try:
        callback(t, img)
    except Exception as e:
        raise _CallbackError() from e


class _Clock:
    """Times ``start + (k + offset) / fps`` for k = 0, 1, ...; computed, never accumulated."""

    def __init__(self, start: float, fps: float, offset: float):
        self.start, self.fps, self.offset, self.k = start, fps, offset, 0

    def _at(self, k: int) -> float:
        return self.start + (k + self.offset) / self.fps

    def next(self) -> float:
        return self._at(self.k)

    def skip_to(self, limit: float) -> None:
        """Advance to the first time not before ``limit`` (jumps VFR gaps in one step)."""
        k = max(self.k, math.ceil((limit - self.start) * self.fps - self.offset))
        while k > self.k and self._at(k - 1) >= limit:
            k -= 1
        while self._at(k) < limit:
            k += 1
        self.k = k


class _Frame:
    __slots__ = ("t", "_get", "_img", "scan")

    def __init__(self, t: float, get: Callable[..., np.ndarray], scan: Optional[Callable[[], np.ndarray]] = None):
        self.t, self._get, self._img, self.scan = t, get, None, scan

    def image(self) -> np.ndarray:
        if self._img is None:
            self._img = self._get()
        return self._img

    def sized(self, size: tuple[int, int]) -> np.ndarray:
        return self._get(size)


class _Picker:
    """Chooses, from frames fed in display order, the ones displayed at the sampling times.

    A frame is known to be displayed at time T once the next frame's time is seen to
    be after T, so the previous frame (``prev``) is held until then. After a backend
    fails, ``abort`` forgets that frame (it belonged to the dead decoder) and the next
    backend is fed from that frame on. Frames of the scan span outside ``span`` only
    go to the scanner.
    """

    def __init__(self, span: Span, cfg: FrameConfig, on_scan, scan_span: Optional[Span] = None,
                 on_sample=None, detect_size: Optional[tuple[int, int]] = None, model: bool = True):
        self.span = span
        self.model = model  # False: frames are only scanned and counted
        self.on_sample, self.detect_size = on_sample, detect_size
        self.samples = _Clock(span.start_s, cfg.sample_fps, 0.5)
        if self.samples.next() >= span.end_s:  # shorter than one interval: its first frame
            self.samples = _Clock(span.start_s, cfg.sample_fps, 0.0)
        scan = scan_span if (scan_span is not None and on_scan) else span
        self.scan_end = scan.end_s
        self.scans = None
        if on_scan:
            # One grid for the whole file, whatever the span: parts scan what one pass would.
            self.scans = _Clock(0.0, cfg.scan_fps, 0.0)
            self.scans.skip_to(scan.start_s)
        self.start = min(span.start_s, scan.start_s)  # what is decoded
        self.end = max(span.end_s, scan.end_s)
        self.on_scan = on_scan
        self.scan_width = cfg.scan_width
        self.prev: Optional[_Frame] = None  # the latest frame taken, displayed until the next one
        self.last_in_span: Optional[_Frame] = None
        self.model_done = False  # a frame after the span was seen: the model's frames are chosen
        self.floor = -math.inf  # frames before this were handled by a backend that failed
        self.times: list[float] = []
        self.images: list[np.ndarray] = []
        self.last_scan_t = -math.inf
        self.frames_decoded = 0
        self.first_t: Optional[float] = None
        self.last_t: Optional[float] = None  # latest frame seen, in the span or before it
        self.out_of_order = 0
        self.seen: list[float] = []  # every frame time in the span, to find holes

    def resume_span(self) -> Span:
        return Span(max(self.start, self.floor), self.end)

    def feed(self, t: float, get: Callable[..., np.ndarray], scan: Optional[Callable[[], np.ndarray]] = None) -> bool:
        """Take the next frame; False once past the spans (stop decoding)."""
        if t >= self.end:
            return False
        if self.last_t is None or t > self.last_t:
            self.last_t = t
        if t < self.start or t < self.floor:
            return True
        in_span = self.span.start_s <= t < self.span.end_s
        if self.prev is not None and t <= self.prev.t:
            self.out_of_order += in_span
            return True
        frame = _Frame(t, get, scan)
        if self.scans is not None and t < self.scan_end and self.scans.next() < t:
            self._choose_scan(self.prev or frame)
            self.scans.skip_to(t)
        if in_span:
            if self.model and self.samples.next() < t:
                self._choose_model(self.last_in_span or frame)
                self.samples.skip_to(t)
            if t > self.floor + 2 * _SAME_FRAME_S:  # not a frame re-read after a fallback
                self.frames_decoded += 1
                self.seen.append(t)
            if self.first_t is None:
                self.first_t = t
            self.last_in_span = frame
        elif t >= self.span.end_s:
            self._finish_model()
        self.prev = frame
        return True

    def finish(self) -> None:
        """The last frame is displayed until the spans end."""
        self._finish_model()
        if self.prev is not None and self.scans is not None and self.scans.next() < self.scan_end:
            self._choose_scan(self.prev)

    def _finish_model(self) -> None:
        if self.model_done or not self.model:
            return
        self.model_done = True
        if self.last_in_span is not None and self.samples.next() < self.span.end_s:
            self._choose_model(self.last_in_span)

    def abort(self) -> None:
        if self.prev is not None:
            self.floor = self.prev.t - _SAME_FRAME_S
            self.prev = None
            self.last_in_span = None

    def _choose_model(self, frame: _Frame) -> None:
        if self.times and abs(self.times[-1] - frame.t) < _SAME_FRAME_S:
            return
        img = frame.image()
        self.times.append(frame.t)
        self.images.append(img)
        if self.on_sample is not None:
            _call(self.on_sample, frame.t, frame.sized(self.detect_size))

    def _choose_scan(self, frame: _Frame) -> None:
        if frame.t <= self.last_scan_t + _SAME_FRAME_S:
            return
        small = frame.scan() if frame.scan is not None else scan_image(frame.image(), self.scan_width)
        _call(self.on_scan, frame.t, small)
        self.last_scan_t = frame.t

    def coverage_notes(self, info: MediaInfo) -> list[str]:
        notes = []
        rate = Fraction(info.frame_rate) if info.frame_rate else None
        frame_s = float(1 / rate) if rate else 0.0
        slack = max(1.0, 2 * frame_s)
        want_end = min(self.span.end_s, info.video_end_s or info.duration_s, info.duration_s)
        # a video track that starts after the sound by its own header (a camera that
        # records sound first, a title card added later) has lost nothing before it
        want_start = max(self.span.start_s, info.video_start_s or 0.0)
        if self.last_t is None:
            if want_end - want_start > slack:
                notes.append(f"no video frames between {want_start:.1f} and {want_end:.1f} s")
        elif want_end - (self.last_t + frame_s) > slack:
            notes.append(f"video stream ends at {self.last_t + frame_s:.1f} s of "
                         f"{info.video_end_s or info.duration_s:.1f} s")
        if self.first_t is not None and self.first_t - want_start > slack:
            notes.append(f"first video frame at {self.first_t:.1f} s, expected from {want_start:.1f} s")
        if self.out_of_order:
            notes.append(f"{self.out_of_order} frames with out-of-order timestamps dropped")
        # An AVI marks a frame its writer did not store (a capture drop, an encoder holding
        # back a B-frame) with an empty chunk: the picture before stays, nothing is lost.
        missing = 0 if _decode_clock(info.container) else _missing_frames(self.seen)
        if missing:
            notes.append(f"{missing} frames missing (gaps in a constant-rate stream)")
        return notes


# A hole is one gap that is a whole multiple of the spacing the frames keep on *both*
# sides of it. Each side must show that spacing over several gaps: a rate that changes
# (piecewise-constant, slowly varying, phone VFR) never has the same regular spacing on
# both sides of one long gap, so only real holes in a constant-rate run count.
_RUN_GAPS = 8  # gaps looked at on each side of a candidate hole
_MIN_REGULAR = 3  # of those, at least this many (and three quarters) at the run's spacing
_TICK_S = 1.2e-3  # millisecond time bases round each time by up to 0.5 ms, so a gap by 1 ms

def _missing_frames(times: list[float]) -> int:
    """Frames absent from constant-rate runs: decoders conceal damage by dropping them.

    Decided from the frame times alone, not from the container's nominal rate (which
    for a variable-rate file is only an average). Limit: a stream that stores frames
    only when the picture changes, on a fixed clock (some screen recordings), looks
    like a constant-rate stream with holes, and is reported as one.
    """
    gaps = np.diff(np.asarray(times, np.float64))
    missing = 0
    if len(gaps) < 2 * _MIN_REGULAR + 1:
        return 0
    neighbour = np.minimum(np.r_[np.inf, gaps[:-1]], np.r_[gaps[1:], np.inf])
    for i in np.flatnonzero(gaps > 1.5 * neighbour):  # only long gaps can be holes
        gap = gaps[i]
        before = _run_step(gaps[max(0, i - _RUN_GAPS):i])
        after = _run_step(gaps[i + 1:i + 1 + _RUN_GAPS])
        if before is None or after is None or abs(before - after) > _tolerance(before):
            continue
        step = (before + after) / 2
        multiple = gap / step
        whole = round(multiple)
        if whole >= 2 and abs(multiple - whole) <= 0.25:
            missing += whole - 1
    return missing


def _run_step(gaps: np.ndarray) -> Optional[float]:
    """The spacing of a constant-rate run, or None when these gaps are not one."""
    if len(gaps) < _MIN_REGULAR:
        return None
    step = float(np.median(gaps))
    regular = gaps[np.abs(gaps - step) <= _tolerance(step)]
    if len(regular) < max(_MIN_REGULAR, 0.75 * len(gaps)):
        return None
    return float(regular.mean())


def _tolerance(step: float) -> float:
    return _TICK_S + 0.02 * step


def _frames_expected(info: MediaInfo, span: Span) -> Optional[int]:
    if not info.frame_rate:
        return None
    seconds = min(span.end_s, info.duration_s) - span.start_s
    return max(0, int(round(seconds * float(Fraction(info.frame_rate)))))
