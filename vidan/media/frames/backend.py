"""What ``decode_part`` and the decoders hand each other.

A backend (``FrameBackend``) hands out ``RawFrame``s lazily, in display order; the
result of a decode is one ``DecodedFrames``. The decoder thread setting lives here,
read by every decoder at the moment it starts, so one assignment reaches them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol

import numpy as np

from vidan.records import MediaInfo, Span

# One decoded frame as a backend hands it out: its presentation time in seconds from
# ``info.start_time_s``, and a function that returns it as upright RGB at model size, or
# at the (width, height) it is given.
RawFrame = tuple[float, Callable[..., np.ndarray]]

# Decoder threads: None lets ffmpeg choose (one per core); benchmarks set 1 to compare
# against a one-thread ffmpeg decode. Set it here (``backend.DECODE_THREADS``): the
# decoders read it from this module.
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


def _error_text(e: BaseException) -> str:
    from vidan.media.probe import av_message

    text = av_message(e) if type(e).__module__.startswith("av.") else str(e)
    # decord prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: "
    text = re.sub(r"\[[\d:]+\] \S+:\d+: ", "", text.strip())
    text = " ".join(text.split())
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
