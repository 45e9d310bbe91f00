"""Picture sizes for the model and the shot scan, and turning coded pictures upright.

Pure arithmetic and one resize: no decoder is imported (cv2 only when a scan picture is
made), so the sizes can be checked without a video.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np

from vidan.config import FrameConfig


def model_size(width: int, height: int, rotation: int, cfg: FrameConfig) -> tuple[int, int]:
    """Upright (width, height) for the model: short side ``model_size``, aspect kept.

    The long side is capped at twice the short one (a panorama is not worth a huge
    image) and at ``max_decode_side``.
    """
    w, h = (height, width) if rotation in (90, 270) else (width, height)
    scale = cfg.model_size / min(w, h)
    scale = min(scale, 2 * cfg.model_size / max(w, h), cfg.max_decode_side / max(w, h))
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def display_width(width: int, sample_aspect: Optional[str]) -> int:
    """The width a player shows a ``width``-pixel picture at, its pixels made square."""
    if not sample_aspect:
        return width
    return max(1, int(round(width * Fraction(sample_aspect))))


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
