"""Laying speech into Whisper's 30-second windows, and words back out of them (pure logic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from vidan.models.asr.items import RATE, WINDOW_S, RawWord

# Silence put between two clips' speech in a shared window, so Whisper hears a pause
# rather than one run-on sentence, and a word cannot straddle the seam.
ITEM_GAP_S = 0.5
# A word in a shared window is placed by the point this share of its length before its end.
END_SHARE = 0.2
# With asr.share_windows, another clip's speech joins a window only while the window
# stays this short. Whisper base misheard words of a clip packed after three or four
# other clips' sentences (40 clips of 8 s: mean WER 0.011 with a window each, 0.035 to
# 0.047 in full 30 s windows, one clip 0.36). Up to 18 s, about three 5 s sentences:
# mean 0.019. Sharing paid while every window was padded to 30 s; with fitted windows
# (below) a window each costs less and mishears less, so it is off by default.
SHARED_FILL_S = 18.0
# Whisper's encoder hears each batch of windows at the length of its longest window plus
# this much silence, not padded to 30 s: CTranslate2 takes shorter inputs. On 40 clips of
# 8 s, a window each: 72 CPU-s padded, 20 fitted, mean WER 0.013 and 0.016. On 30 pairs
# of bundled sentences (11 to 14 s of speech): mean WER 0.036 padded, 0.031 fitted at
# beam 5; 0.076 and 0.048 at beam 1. Without slack the last words of a full window go
# missing (one clip's WER 0.46); 2 s did worse than 3 at beam 1 (0.057). At least
# FIT_MIN_S, the shortest length the guesses and words were checked at.
FIT_SLACK_S = 3.0
FIT_MIN_S = 10.0


@dataclass(frozen=True)
class Piece:
    """Samples [src_start, src_end) of item ``item`` placed at ``dst_start`` of the
    concatenated audio."""

    item: int
    src_start: int
    src_end: int
    dst_start: int

    @property
    def dst_end(self) -> int:
        return self.dst_start + self.src_end - self.src_start


@dataclass(frozen=True)
class Window:
    start: int  # samples in the concatenated audio
    end: int
    pieces: tuple[Piece, ...]

    @property
    def items(self) -> set[int]:
        return {p.item for p in self.pieces}


def pack_windows(pieces: dict[int, list[tuple[int, int]]], *, window: int, gap: int, share: bool = True,
                 share_fill: Optional[int] = None) -> list[Window]:
    """Lay the items' speech pieces (samples, each at most ``window`` long) one after
    another into windows of at most ``window`` samples, in item order, ``gap`` silent
    samples between two items' pieces. A piece of another item than the last joins a
    window only while the window stays within ``share_fill`` samples (default
    ``window``). ``share=False`` gives every item windows of its own (needed to score
    one item's transcript alone)."""
    fill = window if share_fill is None else min(window, share_fill)
    windows: list[Window] = []
    cur: list[Piece] = []
    cur_start = 0
    pos = 0  # next free sample in the concatenated audio
    for item in sorted(pieces):
        if cur and not share:
            windows.append(Window(cur_start, pos, tuple(cur)))
            cur, cur_start = [], pos
        for s, e in pieces[item]:
            n = e - s
            if n <= 0:
                continue
            if n > window:
                raise ValueError(f"a speech piece of {n} samples is longer than a window ({window})")
            other = bool(cur) and cur[-1].item != item
            lead = gap if other else 0
            if cur and pos + lead + n - cur_start > (fill if other else window):
                windows.append(Window(cur_start, pos, tuple(cur)))
                cur, cur_start, lead = [], pos, 0
            pos += lead
            cur.append(Piece(item, s, e, pos))
            pos += n
    if cur:
        windows.append(Window(cur_start, pos, tuple(cur)))
    return windows


def assign_words(words: Iterable[RawWord], windows: Sequence[Window]) -> dict[int, list[RawWord]]:
    """Words timed in the concatenated audio -> each item's words timed from the start of
    its own audio. A word belongs to the piece holding a point near its end (the nearest
    piece of its window when that point is in a gap) and is clamped into that piece: a
    word never leaks into another item. Near its end, not its middle: Whisper stretches
    the first word after a pause back over the silence (the next clip's "To" timed from
    the end of this clip's last word, 1.7 s long), while words end where they are heard."""
    starts = [w.start for w in windows]
    out: dict[int, list[RawWord]] = {}
    for start_s, end_s, text, prob in words:
        at = (end_s - END_SHARE * max(0.0, end_s - start_s)) * RATE
        k = max(0, int(np.searchsorted(starts, at, side="right")) - 1)
        win = windows[k]
        piece = min(win.pieces, key=lambda p: 0.0 if p.dst_start <= at < p.dst_end
                    else min(abs(at - p.dst_start), abs(at - p.dst_end)))
        lo, hi = piece.dst_start / RATE, piece.dst_end / RATE
        s = min(max(start_s, lo), hi)
        e = min(max(end_s, s), hi)
        shift = (piece.src_start - piece.dst_start) / RATE
        out.setdefault(piece.item, []).append((s + shift, e + shift, text, prob))
    return out


def fitted_frames(durations_s: Sequence[float], frames_per_second: int) -> int:
    """Encoder frames for a batch of windows of these lengths: the longest plus
    ``FIT_SLACK_S``, at least ``FIT_MIN_S``, at most Whisper's 30 s."""
    seconds = max(FIT_MIN_S, math.ceil(max(durations_s, default=0.0) + FIT_SLACK_S))
    return int(min(WINDOW_S, seconds) * frames_per_second)
