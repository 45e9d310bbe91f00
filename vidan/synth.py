"""Generate real media files with known content, for tests, benchmarks and ``make run``.

Video frames are encoded with PyAV so every frame's presentation time is chosen
exactly (variable frame rate included); audio is muxed in with the ffmpeg binary.
All ffmpeg calls pass argument lists, never shell strings.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from vidan.media.ffmpeg_bin import ffmpeg_exe

Color = tuple[int, int, int]


def speech_clip(name: str) -> Path:
    """Path of a bundled speech clip (``vidan/data/speech/NAME.ogg``, 16 kHz mono Opus)."""
    p = Path(str(resources.files("vidan") / "data" / "speech" / f"{name}.ogg"))
    if not p.exists():
        raise FileNotFoundError(f"no bundled speech clip {name!r}; have {speech_names()}")
    return p


def speech_text(name: str) -> str:
    return speech_clip(name).with_suffix(".txt").read_text(encoding="utf-8").strip()


def speech_names() -> list[str]:
    d = Path(str(resources.files("vidan") / "data" / "speech"))
    return sorted(p.stem for p in d.glob("*.ogg"))


def run_ffmpeg(args: Sequence[str]) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()}")


@dataclass
class Scene:
    """``duration_s`` of one picture: a photo (HxWx3 uint8) or a flat colour.

    ``pan`` slowly moves the crop window so the scene is not a frozen frame;
    ``fade_in``/``fade_out`` fade from/to black over that many seconds.
    """

    duration_s: float
    image: Union[np.ndarray, Color, None] = None
    pan: bool = True
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0


def photo(name: str) -> np.ndarray:
    """A real photo from scikit-image's bundled data: coffee, chelsea (cat), rocket, astronaut."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _render(scene: Scene, t_in_scene: float, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    if scene.image is None or isinstance(scene.image, tuple):
        color = scene.image or (40, 40, 40)
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = color
        # a little texture so encoders and detectors see real content, not one flat value
        frame = np.clip(frame.astype(np.int16) + rng.integers(-6, 7, (h, w, 1)), 0, 255).astype(np.uint8)
    else:
        frame = _fit(scene.image, w, h, t_in_scene / max(scene.duration_s, 1e-6) if scene.pan else 0.0)
    gain = 1.0
    if scene.fade_in_s > 0 and t_in_scene < scene.fade_in_s:
        gain = t_in_scene / scene.fade_in_s
    if scene.fade_out_s > 0 and t_in_scene > scene.duration_s - scene.fade_out_s:
        gain = min(gain, (scene.duration_s - t_in_scene) / scene.fade_out_s)
    if gain < 1.0:
        frame = (frame.astype(np.float32) * max(gain, 0.0)).astype(np.uint8)
    return frame


def _fit(img: np.ndarray, w: int, h: int, progress: float) -> np.ndarray:
    """Crop ``img`` to the aspect of (w, h) with a slow pan, then resize with PIL."""
    from PIL import Image

    ih, iw = img.shape[:2]
    target = w / h
    cw, ch = (iw, int(iw / target)) if iw / ih < target else (int(ih * target), ih)
    cw, ch = int(cw * 0.9), int(ch * 0.9)  # leave room to pan
    x0 = int((iw - cw) * (0.2 + 0.6 * progress))
    y0 = (ih - ch) // 2
    crop = img[y0:y0 + ch, x0:x0 + cw]
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR))


def write_video(path: Union[str, Path], scenes: Sequence[Scene], *, fps: Union[int, Fraction] = 25,
                size: tuple[int, int] = (320, 240), codec: str = "libx264", audio: Optional[Union[str, Path]] = None,
                audio_offset_s: float = 0.0, frame_times: Optional[Sequence[float]] = None,
                container_options: Optional[dict] = None, gop: Optional[int] = None, seed: int = 0) -> Path:
    """Encode ``scenes`` one after another; optionally mux ``audio`` (any file ffmpeg reads).

    ``frame_times`` overrides the constant rate with explicit presentation times
    (variable frame rate). Returns ``path``.
    """
    import av

    path = Path(path)
    total = sum(s.duration_s for s in scenes)
    if frame_times is None:
        n = int(round(total * float(fps)))
        frame_times = [i / float(fps) for i in range(n)]
    rng = np.random.default_rng(seed)
    video_path = path if audio is None else path.with_name(path.stem + ".noaudio" + path.suffix)
    tb = Fraction(1, 1000)
    with av.open(str(video_path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps if isinstance(fps, (int, Fraction)) else Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = tb
        stream.codec_context.time_base = tb
        if gop:
            stream.codec_context.gop_size = gop
        bounds = np.cumsum([0.0] + [s.duration_s for s in scenes])
        for t in frame_times:
            k = min(int(np.searchsorted(bounds, t, side="right")) - 1, len(scenes) - 1)
            img = _render(scenes[k], t - bounds[k], size, rng)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    if audio is not None:
        args = ["-i", video_path]
        if audio_offset_s:
            args += ["-itsoffset", f"{audio_offset_s:.3f}"]
        args += ["-i", str(audio), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-t", f"{total:.3f}", path]
        run_ffmpeg(args)
        video_path.unlink()
    return path


def concat_audio(path: Union[str, Path], pieces: Sequence[tuple[float, Optional[Union[str, Path]]]], rate: int = 16000) -> Path:
    """Write a WAV of ``pieces``: (start_s, file or None) placed on a silent track.

    Each file is decoded with ffmpeg and laid at its start time; the track ends when
    the last piece ends. Used to put speech at known times under a video.
    """
    import wave

    tracks = []
    for start, src in pieces:
        if src is None:
            continue
        tracks.append((start, read_audio(src, rate)))
    end = max((s + len(a) / rate for s, a in tracks), default=0.0)
    out = np.zeros(int(np.ceil(end * rate)) + 1, np.float32)
    for start, a in tracks:
        i = int(round(start * rate))
        out[i:i + len(a)] += a[: len(out) - i]
    pcm = (np.clip(out, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return Path(path)


def read_audio(src: Union[str, Path], rate: int = 16000) -> np.ndarray:
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(src), "-f", "f32le",
                           "-ac", "1", "-ar", str(rate), "-"], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace"))
    return np.frombuffer(proc.stdout, np.float32).copy()


# --- frames whose content says when they were shown --------------------------------

_BITS = 20  # milliseconds up to ~17 minutes


def timecode_image(ms: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A frame that encodes ``ms`` as a row of black/white blocks (robust to compression)."""
    w, h = size
    img = np.full((h, w, 3), 128, np.uint8)
    bw = w // _BITS
    for b in range(_BITS):
        img[h // 4: 3 * h // 4, b * bw:(b + 1) * bw] = 255 if (ms >> b) & 1 else 0
    return img


def read_timecode(img: np.ndarray) -> int:
    """Inverse of ``timecode_image`` on a decoded (possibly resized) RGB frame."""
    h, w = img.shape[:2]
    bw = w / _BITS
    row = img[h // 2].astype(np.float32).mean(axis=-1)
    ms = 0
    for b in range(_BITS):
        x = int((b + 0.5) * bw)
        if row[x] > 128:
            ms |= 1 << b
    return ms


def write_timecode_video(path: Union[str, Path], frame_times: Sequence[float], *, size=(320, 240),
                         codec: str = "libx264") -> Path:
    """A (possibly variable-frame-rate) video where each frame shows its own pts in ms."""
    import av

    path = Path(path)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = tb
        stream.codec_context.time_base = tb
        for t in frame_times:
            ms = int(round(t * 1000))
            frame = av.VideoFrame.from_ndarray(timecode_image(ms, size), format="rgb24")
            frame.pts = ms
            frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def lavfi(path: Union[str, Path], source: str, duration_s: float, *extra: str) -> Path:
    """``ffmpeg -f lavfi -i SOURCE -t DURATION [extra] PATH`` for quick synthetic inputs."""
    run_ffmpeg(["-f", "lavfi", "-i", source, "-t", f"{duration_s}", *extra, str(path)])
    return Path(path)


def join_without_reencoding(path: Union[str, Path], clips: Sequence[Union[str, Path]]) -> Path:
    """Join clips end to end with ffmpeg's concat demuxer and ``-c copy``, as users do.

    Each clip's times are shifted to start where the one before ends, so clips at
    different frame rates make one piecewise-constant variable-rate stream.
    """
    path = Path(path)
    listing = path.with_name(path.stem + ".concat.txt")
    listing.write_text("".join(f"file '{Path(c).resolve()}'\n" for c in clips), encoding="utf-8")
    try:
        run_ffmpeg(["-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", path])
    finally:
        listing.unlink()
    return path
