"""Frames for people to look at: one picture per segment, read from the source video at
the segment's keyframe time, kept as PNG in vidan's cache (never in the report).

``Report.thumbnails`` calls this; in Jupyter the result shows as a grid of images with
captions (HTML with base64 PNGs, so a saved notebook keeps its pictures).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def keyframe_time(keyframe_s, start_s: float, end_s: float) -> float:
    """The segment's keyframe time, or its middle when no frame was sampled in it."""
    if keyframe_s is not None and not (isinstance(keyframe_s, float) and math.isnan(keyframe_s)):
        return float(keyframe_s)
    return (float(start_s) + float(end_s)) / 2


def cache_folder() -> Path:
    try:
        from vidan.models.cache import cache_dir

        d = cache_dir() / "thumbnails"
        d.mkdir(parents=True, exist_ok=True)
        return d
    except OSError:  # a read-only home: a private temp folder still saves decoding twice
        d = Path(tempfile.gettempdir()) / f"vidan-thumbnails-{os.getuid()}"
        d.mkdir(exist_ok=True)
        return d


def read_frame(path: str, t: float, start_time_s: float = 0.0, rotation: int = 0, width: int = 240) -> np.ndarray:
    """The upright RGB frame shown at ``t`` seconds (from the file's start time, as the
    report's times are), ``width`` pixels wide."""
    if _clock_jumps(path):  # the report's times are those of the copy on one clock
        from vidan.sources import local_copy

        with local_copy(path, continuous=True) as copy:
            return _read_frame(copy, t, start_time_s, rotation, width)
    return _read_frame(path, t, start_time_s, rotation, width)


def _clock_jumps(path: str) -> tuple[float, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return ()  # the open below says what is wrong
    return _jumps_of(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _jumps_of(path: str, size: int, mtime_ns: int) -> tuple[float, ...]:
    from vidan.media.timeline import clock_jumps

    return clock_jumps(path)  # a packet scan: once per file, not once per picture


def _read_frame(path: str, t: float, start_time_s: float, rotation: int, width: int) -> np.ndarray:
    import av

    from vidan.media.frames import upright

    target = float(start_time_s or 0.0) + float(t)
    with av.open(path, metadata_errors="ignore") as c:
        stream = next((s for s in c.streams.video), None)
        if stream is None:
            raise ValueError(f"{path}: no video stream")
        if stream.time_base:
            c.seek(max(0, int(target / float(stream.time_base))), stream=stream, backward=True)
        chosen = None
        for frame in c.decode(stream):
            if frame.time is None:
                continue
            # the frame on screen at the target: the last one that starts at or before it
            if chosen is None or frame.time <= target + 1e-6:
                chosen = frame
            if frame.time > target + 1e-6:
                break
        if chosen is None:
            raise ValueError(f"{path}: no frame decoded near {t:.3f} s")
        from vidan.media.frames import display_width
        from vidan.media.probe import sample_aspect

        rot = int(rotation or 0) % 360
        coded_w = display_width(chosen.width, sample_aspect(stream))
        shown_w, shown_h = (chosen.height, coded_w) if rot in (90, 270) else (coded_w, chosen.height)
        w, h = width, max(2, int(round(width * shown_h / shown_w / 2)) * 2)
        size = (h, w) if rot in (90, 270) else (w, h)
        return upright(chosen.to_ndarray(width=size[0], height=size[1], format="rgb24"), rot)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _cached(video_id: str, path: str, t: float, start_time_s, rotation, width: int) -> np.ndarray:
    from PIL import Image

    # video_id is the file's content hash: an edited file gets new pictures
    name = cache_folder() / f"{video_id}-{int(round(t * 1000))}-{int(rotation or 0)}-{width}.png"
    if name.is_file():
        with Image.open(name) as im:
            return np.asarray(im.convert("RGB"))
    img = read_frame(path, t, start_time_s or 0.0, int(rotation or 0), width)
    tmp = name.with_name(f".{name.name}.{os.getpid()}.tmp")
    tmp.write_bytes(_png(img))
    os.replace(tmp, name)  # readers never see half a file
    return img


@dataclass
class Thumbnails:
    images: list[Optional[np.ndarray]]  # RGB uint8, None where the frame could not be read
    captions: list[str]
    errors: list[Optional[str]] = field(default_factory=list)

    @classmethod
    def grab(cls, items: Sequence[tuple], width: int = 240) -> "Thumbnails":
        """``items``: (video_id, path, t, start_time_s, rotation, caption) each."""
        images, captions, errors = [], [], []
        for video_id, path, t, start_time_s, rotation, caption in items:
            captions.append(caption)
            try:
                images.append(_cached(video_id, path, t, start_time_s, rotation, width))
                errors.append(None)
            except (OSError, ValueError) as e:  # av.error.* derive from OSError or ValueError
                images.append(None)
                errors.append(f"{type(e).__name__}: {e}")
        return cls(images, captions, errors)

    def __len__(self) -> int:
        return len(self.images)

    def _repr_html_(self) -> str:
        cells = []
        for img, caption, err in zip(self.images, self.captions, self.errors or [None] * len(self.images)):
            if img is not None:
                data = base64.b64encode(_png(img)).decode()
                pic = f'<img src="data:image/png;base64,{data}" style="max-width:100%">'
            else:
                pic = f'<div style="padding:2em;background:#eee">{html.escape(err or "no frame")}</div>'
            cells.append(f'<figure style="margin:4px">{pic}<figcaption style="font-size:small">'
                         f'{html.escape(caption)}</figcaption></figure>')
        return ('<div style="display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:4px">'
                + "".join(cells) + "</div>")
