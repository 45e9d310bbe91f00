"""Files whose clock restarts: MPEG transport and program streams joined end to end.

``cat a.ts b.ts > both.ts`` (or a recorder that splices two programmes) gives a file
whose presentation times jump back to where the first recording began. A decoder that
trusts the times sees the second recording as frames out of order and drops it. ffmpeg's
own remuxer knows these formats may jump (``AVFMT_TS_DISCONT``) and shifts every stream
of the file by the same offset at each jump, so its stream copy plays both recordings on
one continuous clock with picture and sound still in step.

vidan finds the jumps without decoding (``clock_jumps``, at probe time) and analyses such
a file through that stream copy (``write_continuous``), made once per node in scratch
space by ``vidan.sources.local_copy``. The copy is NUT, ffmpeg's own container: it takes
any codec a transport stream carries and keeps the 90 kHz times exact (Matroska would
round them to milliseconds).
"""

from __future__ import annotations

import math
import os
import subprocess
from typing import Optional

from vidan.records import STAGE_PROBE, MediaError

TS_DISCONT = 0x0200  # AVFMT_TS_DISCONT: the format's timestamps may jump
# A jump back by more than this, or forward by more than FORWARD_S, is a new clock.
# Forward gaps shorter than that are holes in one recording, kept as holes (ffmpeg's
# remuxer draws the same line: -dts_delta_threshold, 10 s).
BACK_S = 1.0
FORWARD_S = 10.0
COPY_FORMAT = "nut"
COPY_SUFFIX = ".continuous.nut"


def may_jump(container) -> bool:
    """Whether ``container`` (an open PyAV container) is of a format whose clock may restart."""
    return bool(int(container.format.flags) & TS_DISCONT)


def clock_jumps(path: str, stream_index: Optional[int] = None) -> tuple[float, ...]:
    """Where the clock of ``path`` restarts, in seconds of play before each jump (a
    continuous timeline from the file's start); empty when it never does or when the
    format's clock cannot restart. Reads packets only."""
    import av

    with av.open(path, metadata_errors="ignore") as container:
        if not may_jump(container):
            return ()
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        if stream_index is not None:
            streams = [s for s in streams if s.index == stream_index]
        stream = next((s for s in streams if s.type == "video"), streams[0] if streams else None)
        if stream is None or stream.time_base is None:
            return ()
        tb = float(stream.time_base)
        jumps: list[float] = []
        played = 0.0  # seconds of play in the recordings before this one
        lo = hi = last = None  # this recording's earliest and latest time (B-frames come out of order)
        step = math.inf  # one packet's length, to count the last frame's time too: the packets'
        # own durations, else the smallest step between two packets' times
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = packet.pts * tb
                if hi is not None and (t < hi - BACK_S or t > hi + FORWARD_S):
                    played += hi - lo + (step if math.isfinite(step) else 0.0)
                    jumps.append(round(played, 6))
                    lo = hi = last = None
                if packet.duration:
                    step = packet.duration * tb
                elif last is not None and t > last:
                    step = min(step, t - last)
                lo = t if lo is None else min(lo, t)
                hi = t if hi is None else max(hi, t)
                last = t
        except av.error.FFmpegError:
            pass  # a damaged tail: the jumps before it still hold
        return tuple(jumps)


def write_continuous(src: str, dst: str, timeout_s: float = 3600.0) -> None:
    """Stream-copy ``src``'s pictures and sound to ``dst`` (NUT) on one continuous clock,
    whole or not at all. Raises ``MediaError`` with ffmpeg's own words."""
    from vidan.media.ffmpeg_bin import ffmpeg_exe

    # hidden until whole: scratch eviction (vidan.sources._make_room) passes over dot files
    part = os.path.join(os.path.dirname(dst) or ".", f".{os.path.basename(dst)}.{os.getpid()}.part")
    # no shell, and the file name goes after -i as one argument: nothing in it is parsed
    # +genpts: a program stream leaves some frames' times out, and NUT needs every one
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-fflags", "+genpts", "-i", src,
            "-map", "0:v?", "-map", "0:a?", "-c", "copy", "-dn", "-sn", "-f", COPY_FORMAT, part]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            said = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise MediaError(STAGE_PROBE, "could not copy the recordings onto one clock: "
                             + (said or f"ffmpeg exited with code {proc.returncode}"))
        os.replace(part, dst)
    except subprocess.TimeoutExpired:
        raise MediaError(STAGE_PROBE, f"copying the recordings onto one clock timed out after {timeout_s:g} s") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)


def jump_note(jumps: tuple[float, ...]) -> str:
    at = ", ".join(f"{t:.1f} s" for t in jumps[:5]) + (f" and {len(jumps) - 5} more" if len(jumps) > 5 else "")
    return (f"the file's clock restarts at {at} (recordings joined end to end): analysed on one "
            "continuous clock, through ffmpeg's stream copy")
