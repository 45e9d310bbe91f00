"""Shot boundaries from the small frames the pipeline already decodes for scanning.

Frames arrive one at a time (``push``), small (~96 px wide) and sparse (~8 a second,
possibly at irregular times: variable frame rate). Hard cuts come from PySceneDetect's
``ContentDetector`` score (``content_score``, the same arithmetic without its per-frame
overhead), frame by frame; fades to and from black come from the mean
brightness of each frame (the measure PySceneDetect's ``ThresholdDetector`` uses),
handled here so that a fade-out followed by a fade-in is *one* boundary and the large
frame-to-frame changes inside the fade are not also reported as hard cuts.

Times: every time reported comes from the times given to ``push``, so variable frame
rates are exact. A cut's ``t_s`` is the time of the first pushed frame of the new shot.

Tuning at ~8 frames a second, 96 px wide (synthetic 320x240 H.264 of scikit-image
photos, as in ``tests/test_shots.py`` and ``benchmarks/bench_segments.py``): a hard cut
between different pictures scores 40-120 on ContentDetector's scale, as at full size
and rate, because a cut is one frame-to-frame jump whatever the sampling. Slow pans
score 3-9 and a pan across the whole picture in one second 10-17; fades score 8-13 a
step outside the dark frames. The default threshold 27 keeps a wide margin on both
sides, so it stays. Limits: a cross-dissolve spreads its change over many samples,
each well under the threshold, and is not found; a whip pan can score like a cut;
``tests/test_shots.py`` checks the score against scenedetect's own ContentDetector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vidan.config import ShotConfig
from vidan.records import Cut

# A dark stretch at least this long is a (black) shot of its own: it gets a boundary where
# it starts and one where it ends, instead of one in its middle.
LONG_DARK_S = 3.0
# How far before and after a dark stretch falling/rising brightness still counts as the
# fade; bounds what a slowly dimming scene can hide.
MAX_RAMP_S = 3.0
# A ramp step must change the brightness by more than this (0-255 scale): a shot that only
# drifts darker (a slow pan) is not part of the fade, and a hard cut before it stays a cut.
RAMP_MIN_STEP = 0.5


def context_s(cfg: ShotConfig) -> float:
    """How far on each side of a part the detector must see to decide the cuts in it as
    a scan of the whole file does: a dark stretch short enough to be one boundary, the
    fade ramps around it, and a neighbouring cut closer than ``min_shot_s``."""
    return LONG_DARK_S + MAX_RAMP_S + cfg.min_shot_s


@dataclass(frozen=True)
class _Frame:
    t: float
    content: float  # ContentDetector's score against the previous pushed frame (0 for the first)
    brightness: float  # mean of all RGB values, 0-255


class ShotDetector:
    """Push frames in increasing time, then ``finish()`` for the sorted cuts.

    Keeps three numbers per frame, not the frames, so a detector can run over a whole
    part of a video.
    """

    def __init__(self, cfg: ShotConfig):
        self.cfg = cfg
        self._frames: list[_Frame] = []
        self._last_hsv: Optional[np.ndarray] = None

    def push(self, t_s: float, frame_rgb: np.ndarray) -> None:
        if not math.isfinite(t_s):
            raise ValueError(f"frame time must be finite, got {t_s!r}")
        if self._frames and t_s <= self._frames[-1].t:
            raise ValueError(f"frames must be pushed in increasing time: {t_s} after {self._frames[-1].t}")
        if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {frame_rgb.dtype} {frame_rgb.shape}")
        hsv = _hsv(frame_rgb)
        content = content_score(self._last_hsv, hsv) if self._last_hsv is not None else 0.0
        self._last_hsv = hsv
        self._frames.append(_Frame(float(t_s), content, float(frame_rgb.mean())))

    def finish(self) -> list[Cut]:
        """The shot boundaries found, sorted, no two closer than ``min_shot_s``."""
        frames = self._frames
        if len(frames) < 2:
            return []
        fades, absorbed = self._fades()
        cuts = [Cut(frames[k].t, "cut", frames[k].content) for k in range(1, len(frames))
                if frames[k].content >= self.cfg.threshold and k not in absorbed]
        return self._min_length(sorted(fades + cuts, key=lambda c: c.t_s))

    def _fades(self) -> tuple[list[Cut], set[int]]:
        """Boundaries for dark stretches, and the frames whose content jump they explain."""
        frames = self._frames
        n = len(frames)
        dark = [f.brightness < self.cfg.fade_threshold for f in frames]
        cuts: list[Cut] = []
        absorbed: set[int] = set()
        k = 0
        while k < n:
            if not dark[k]:
                k += 1
                continue
            i0 = k
            while k < n and dark[k]:
                k += 1
            i1 = k - 1  # dark[i0..i1], frames[k] (if any) is the first bright one again
            # The fade ramps: brightness falling into the dark run and rising out of it.
            r0 = i0
            while (r0 > 0 and frames[r0 - 1].brightness > frames[r0].brightness + RAMP_MIN_STEP
                   and frames[i0].t - frames[r0 - 1].t <= MAX_RAMP_S):
                r0 -= 1
            r1 = i1
            while (r1 + 1 < n and frames[r1 + 1].brightness > frames[r1].brightness + RAMP_MIN_STEP
                   and frames[r1 + 1].t - frames[i1].t <= MAX_RAMP_S):
                r1 += 1
            absorbed.update(range(r0 + 1, r1 + 1))  # jumps between frames inside the fade
            score = max(frames[r0].brightness, frames[r1].brightness) - min(f.brightness for f in frames[i0:i1 + 1])
            if i0 == 0 and k == n:
                continue  # all dark: nothing to separate
            if i0 == 0:  # starts in black: the picture begins where it fades in
                cuts.append(Cut(frames[k].t, "fade", score))
            elif k == n:  # ends in black: the last shot is the black
                cuts.append(Cut(frames[i0].t, "fade", score))
            elif frames[k].t - frames[i0].t >= LONG_DARK_S:
                cuts.append(Cut(frames[i0].t, "fade", score))
                cuts.append(Cut(frames[k].t, "fade", score))
            else:
                # One boundary in the middle of the darkness, on a pushed frame time.
                mid = (frames[i0].t + frames[k].t) / 2
                t = min((frames[j].t for j in range(i0, k + 1)), key=lambda t: (abs(t - mid), -t))
                cuts.append(Cut(t, "fade", score))
        return cuts, absorbed

    def _min_length(self, cuts: list[Cut]) -> list[Cut]:
        """Drop cuts that would leave a shot shorter than ``min_shot_s``.

        Of two cuts too close together the stronger stays: a fade over a hard cut (the
        hard one is then usually a jump inside the transition), else the higher score.
        """
        frames = self._frames
        step = float(np.median(np.diff([f.t for f in frames])))
        start, end = frames[0].t, frames[-1].t + step  # the last frame is shown for about one step
        min_s = self.cfg.min_shot_s
        kept: list[Cut] = []
        for c in cuts:
            if c.t_s - start < min_s or end - c.t_s < min_s:
                continue
            if kept and c.t_s - kept[-1].t_s < min_s:
                if _strength(c) > _strength(kept[-1]):
                    kept[-1] = c
                continue
            kept.append(c)
        return kept


def _hsv(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV).astype(np.int32)


def content_score(a_hsv: np.ndarray, b_hsv: np.ndarray) -> float:
    """PySceneDetect ``ContentDetector``'s score (default weights: hue, saturation and
    value 1, edges 0) between two frames already in HSV, computed the same way.

    Computed here rather than through ``ContentDetector.process_frame``: with a stats
    manager attached it also runs Canny edges on every frame, and its per-frame
    bookkeeping cost about as much as decoding the scan frames.
    """
    n = float(a_hsv.shape[0] * a_hsv.shape[1])
    d = [float(np.sum(np.abs(a_hsv[..., c] - b_hsv[..., c]))) / n for c in range(3)]
    # the same operations in the same order as ContentDetector, so the floats agree
    return sum(component * weight for component, weight in zip(d + [0.0], (1.0, 1.0, 1.0, 0.0))) / 3.0


def _strength(c: Cut) -> tuple[int, float]:
    return (1 if c.kind == "fade" else 0, c.score)

