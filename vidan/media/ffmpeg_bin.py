"""Where the ffmpeg binary is.

``VIDAN_FFMPEG`` wins; otherwise the static build inside the imageio-ffmpeg wheel, so a
fresh machine needs no system ffmpeg. The wheel has no ffprobe: probing uses PyAV.
"""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    explicit = os.environ.get("VIDAN_FFMPEG")
    if explicit:
        return explicit
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()
