"""What the decoders read from a file's container beside its frames, through PyAV.

The video stream to decode, its coded size when the probe had none, the start time
every frame time counts from, and whether the container's clock is the decode order
(AVI) rather than presentation timestamps. Shared by both backends, the keyframe path
and the coverage notes; ``av`` is imported only when a file is opened.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional

from vidan.records import STAGE_DECODE, MediaError


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


def _seconds(start_time_s: float) -> Fraction:
    # the container's start time is whole microseconds (AV_TIME_BASE)
    return Fraction(int(round(start_time_s * 1_000_000)), 1_000_000)


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
