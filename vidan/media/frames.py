"""Decode the frames of one span of a video, model-sized and upright.

Two backends sit behind one small interface (``FrameBackend``): decord and PyAV. The
configured one goes first; when it cannot open or decode the file, or reports
timestamps that cannot be true, the other one carries on from where it stopped and
the result says so in ``notes``.

Which frames are kept is decided here, not in the backends: for each sampling time the
frame *displayed* at that time (the last one whose presentation time is not after it).
That needs one frame of look-ahead, so backends hand out frames lazily and only the
chosen ones are ever converted to RGB, and then straight at model size in the decoder:
a 4K frame never becomes a full-size RGB array.

The keyframe path (PyAV only, whatever ``backend`` says) avoids decoding what the
sampler does not need when the file allows it: when every keyframe of the decoded range
is at most ``MAX_KEY_GAP_S`` from the next (seen from the packet index, without
decoding), each sampling time gets the nearest keyframe, reported at that keyframe's
own presentation time; the shot scan decodes only reference frames (the frames skipped
are never shown to anything else) and skips the deblocking filter on all but keyframes.
Files with keyframes further apart, AVI (no presentation times) and ``fast=False`` go
the full-decode way above, through the configured backend (decord or PyAV).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import partial
from typing import Callable, Iterator, Optional, Protocol

import numpy as np

from vidan.config import FrameConfig
from vidan.records import STAGE_DECODE, MediaError, MediaInfo, Span

# One decoded frame as a backend hands it out: its presentation time in seconds from
# ``info.start_time_s``, and a function that returns it as upright RGB at model size, or
# at the (width, height) it is given.
RawFrame = tuple[float, Callable[..., np.ndarray]]

_SAME_FRAME_S = 1e-4  # two times closer than this are the same frame (backends round differently)

# The keyframe path is taken when no two keyframes are further apart than this: a sample
# is then never more than half of it from the time it stands for.
MAX_KEY_GAP_S = 2.0
_KEY_GAP_SLACK_S = 0.01  # "every 2 s" in a millisecond time base is 2.000 or 2.001 s

# Decoder threads: None lets ffmpeg choose (one per core); benchmarks set 1 to compare
# against a one-thread ffmpeg decode.
DECODE_THREADS: Optional[int] = None


@dataclass
class DecodedFrames:
    times_s: np.ndarray  # float64 (N,): presentation time of each sampled frame, from info.start_time_s
    images: np.ndarray  # uint8 (N, H, W, 3) RGB, upright, short side == cfg.model_size
    backend: str  # the backend that actually decoded: "decord" or "pyav"
    frames_decoded: int  # frames whose presentation time lies in the span
    frames_expected: Optional[int]  # from the duration and the frame rate, when known
    notes: list[str] = field(default_factory=list)  # losses worth reporting
    fallback: Optional[str] = None  # why the first backend was not used; not a loss


class FrameBackend(Protocol):
    name: str

    def iter_frames(self, path: str, info: MediaInfo, span: Span, size: tuple[int, int],
                    notes: list[str]) -> Iterator[RawFrame]:
        """Frames from shortly before ``span.start_s`` to at least ``span.end_s``, in display order.

        ``size`` is the upright (width, height) every image must have. Losses the
        caller should report (skipped packets, guessed times) go into ``notes``.
        Raises when the file cannot be opened or decoded at all.
        """
        ...


def decode_part(path, info: MediaInfo, span: Span, cfg: FrameConfig,
                on_scan: Optional[Callable[[float, np.ndarray], None]] = None,
                scan_span: Optional[Span] = None,
                on_sample: Optional[Callable[[float, np.ndarray], None]] = None,
                fast: bool = True) -> DecodedFrames:
    """Sample ``span`` of the video for the image model (and the shot scanner).

    Model frames: the frame displayed at ``span.start_s + (k + 0.5) / cfg.sample_fps``
    for each such time inside the span, each frame once; a span shorter than one
    interval still gives its first frame. On the keyframe path (module docstring) the
    keyframe nearest each such time instead. ``times_s`` is always each frame's own
    presentation time. ``on_scan(t_s, rgb)`` receives, in time
    order, the frame displayed at every ``k / cfg.scan_fps`` (from the file's start)
    inside ``scan_span`` (default: ``span``), ``cfg.scan_width`` pixels wide. A scan
    span wider than ``span`` gives the shot detector the context around a part; only
    ``span`` counts for the model frames, the frame counts and the notes.
    ``on_sample(t_s, rgb)`` receives each model frame as it is chosen, upright, short
    side ``cfg.detect_side``, for detectors that need more pixels than the model.
    ``fast=False`` decodes every frame through the configured backend.
    """
    if not info.has_video:
        raise MediaError(STAGE_DECODE, "no video stream")
    width, height = info.width, info.height
    if not width or not height:
        width, height = _coded_size(str(path))
    size = model_size(width, height, info.rotation, cfg)
    # detectors get more pixels than the model, but never more than the file has:
    # decoding a 360p file at 480p costs several times the decode and shows nothing new
    detect = (model_size(width, height, info.rotation,
                         replace(cfg, model_size=max(cfg.model_size, min(cfg.detect_side, width, height))))
              if on_sample is not None else None)
    fast_note = None
    if fast:
        sent = _Sent(on_scan, on_sample)
        try:
            out = _keyframe_path(str(path), info, span, cfg, size, detect, scan_span, sent)
        except _CallbackError as e:
            raise e.__cause__ from None
        except MemoryError:
            raise
        except Exception as e:  # the full decode below reads what this one could not
            out = None
            fast_note = f"keyframe path failed ({_error_text(e)}), decoded every frame"
        if out is not None:
            return out
        if sent.scan_t > -math.inf or sent.sample_t > -math.inf:
            # what the caller already has is not sent twice
            on_scan, on_sample = sent.after(on_scan, sent.scan_t), sent.after(on_sample, sent.sample_t)
    picker = _Picker(span, cfg, on_scan, scan_span, on_sample=on_sample, detect_size=detect)

    order = [cfg.backend] + ([n for n in BACKENDS if n != cfg.backend] if cfg.fallback else [])
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    fallback: Optional[str] = None
    used: Optional[str] = None
    fed_by = order[0]  # the backend that delivered the latest frames
    for name in order:
        backend_notes: list[str] = []
        before = picker.frames_decoded
        if name == "decord":
            extra = {"read_size": detect} if detect is not None else {}
        else:  # PyAV scales each scan frame straight from the decoded planes to the scan's size
            extra = {"scan_size": scan_dims(size, cfg.scan_width)} if on_scan is not None else {}
        frames = BACKENDS[name].iter_frames(str(path), info, picker.resume_span(), size, backend_notes, **extra)
        try:
            try:
                for frame in frames:
                    if not picker.feed(*frame):
                        break
            finally:
                frames.close()  # ends the decoder now, so its notes are complete
            picker.finish()
        except _CallbackError as e:
            raise e.__cause__ from None  # the caller's own error, not the decoder's
        except MemoryError:
            raise
        except Exception as e:  # any failure of this backend: the next one carries on
            failures.append((name, _error_text(e)))
            notes.extend(backend_notes)
            picker.abort()
            if picker.frames_decoded > before:
                fed_by = name
            continue
        notes.extend(backend_notes)
        used = name
        break

    if used is None and picker.frames_decoded == 0:
        raise MediaError(STAGE_DECODE, "; ".join(f"{n}: {text}" for n, text in failures))
    if used is None:
        used = fed_by
        notes.append("decoding stopped early: " + "; ".join(f"{n}: {text}" for n, text in failures))
    elif failures:
        fallback = "; ".join(f"{n} failed ({text})" for n, text in failures) + f", used {used}"
    notes.extend(picker.coverage_notes(info))
    if fast_note:
        notes.append(fast_note)
    expected = _frames_expected(info, span)

    images = (np.stack(picker.images) if picker.images
              else np.zeros((0, size[1], size[0], 3), np.uint8))
    return DecodedFrames(
        times_s=np.asarray(picker.times, np.float64),
        images=images,
        backend=used,
        frames_decoded=picker.frames_decoded,
        frames_expected=expected,
        notes=notes,
        fallback=fallback,
    )


# --- pure pieces ---------------------------------------------------------------------

def model_size(width: int, height: int, rotation: int, cfg: FrameConfig) -> tuple[int, int]:
    """Upright (width, height) for the model: short side ``model_size``, aspect kept.

    The long side is capped at twice the short one (a panorama is not worth a huge
    image) and at ``max_decode_side``.
    """
    w, h = (height, width) if rotation in (90, 270) else (width, height)
    scale = cfg.model_size / min(w, h)
    scale = min(scale, 2 * cfg.model_size / max(w, h), cfg.max_decode_side / max(w, h))
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a coded picture ``rotation`` degrees clockwise, as a player would show it."""
    k = (-(rotation // 90)) % 4  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def scan_dims(size: tuple[int, int], width: int) -> tuple[int, int]:
    """(width, height) of the shot scan's pictures for pictures of ``size``: aspect kept."""
    return width, max(1, int(round(size[1] * width / size[0])))


def scan_image(img: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, scan_dims((w, h), width), interpolation=cv2.INTER_AREA)


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
        if self.last_t is None:
            if want_end > self.span.start_s:
                notes.append(f"no video frames between {self.span.start_s:.1f} and {want_end:.1f} s")
        elif want_end - (self.last_t + frame_s) > slack:
            notes.append(f"video stream ends at {self.last_t + frame_s:.1f} s of "
                         f"{info.video_end_s or info.duration_s:.1f} s")
        if self.first_t is not None and self.first_t - self.span.start_s > slack:
            notes.append(f"first video frame at {self.first_t:.1f} s, span starts at {self.span.start_s:.1f} s")
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


def _seconds(start_time_s: float) -> Fraction:
    # the container's start time is whole microseconds (AV_TIME_BASE)
    return Fraction(int(round(start_time_s * 1_000_000)), 1_000_000)


def _error_text(e: BaseException) -> str:
    from vidan.media.probe import av_message

    text = av_message(e) if type(e).__module__.startswith("av.") else str(e)
    # decord prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: "
    text = re.sub(r"\[[\d:]+\] \S+:\d+: ", "", text.strip())
    text = " ".join(text.split())
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- PyAV ------------------------------------------------------------------------------

def _video_stream(container):
    from vidan.media.probe import _first

    return _first(container.streams, "video")


def _coded_size(path: str) -> tuple[int, int]:
    import av

    with av.open(path, metadata_errors="ignore") as c:
        s = _video_stream(c)
        if s is None or not s.codec_context.width:
            raise MediaError(STAGE_DECODE, "video stream has no picture size")
        return int(s.codec_context.width), int(s.codec_context.height)


def _with_scan(t: float, get, scan_size: Optional[tuple[int, int]]):
    return (t, get) if scan_size is None else (t, get, partial(get, scan_size))


def _pyav_rgb(frame, size: tuple[int, int], rotation: int, want: Optional[tuple[int, int]] = None) -> np.ndarray:
    w, h = want or size
    w, h = (h, w) if rotation in (90, 270) else (w, h)
    # swscale scales straight from the decoded YUV planes to model size
    img = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
    return upright(img, rotation)


# Containers that store one frame per tick of a fixed clock and no presentation times.
# ffmpeg guesses presentation times for them, wrongly once frames are reordered
# (B-frames: DivX/Xvid and H.264 in AVI); the decode clock is exact instead.
_DECODE_CLOCK_FORMATS = {"avi"}


def _decode_clock(format_name: Optional[str]) -> bool:
    return bool(set((format_name or "").split(",")) & _DECODE_CLOCK_FORMATS)


def _reorder_depth(codec_context) -> int:
    """Frames a decoder holds back to put them in display order (0 without B-frames)."""
    depth = getattr(codec_context, "reorder_depth", None)  # older PyAV has only the flag
    return int(depth if depth is not None else bool(codec_context.has_b_frames))


def _set_threads(stream) -> None:
    if DECODE_THREADS:
        stream.thread_count = DECODE_THREADS
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
        while True:
            try:
                for packet in self.container.demux(self.stream):
                    errors_in_row = 0
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
                        yield self._timed(frame)
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


# --- the keyframe path (PyAV) ------------------------------------------------------------

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
                if not packet.size:
                    continue
                if packet.pts is None:
                    return None  # times would have to be guessed: the full decode does that
                t = float(packet.pts * tb - t0)
                times.append(t)
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


# --- decord ----------------------------------------------------------------------------

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
                                num_threads=DECODE_THREADS or 0)
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


BACKENDS: dict[str, FrameBackend] = {"decord": DecordBackend(), "pyav": PyAVBackend()}
