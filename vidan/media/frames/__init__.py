"""Decode the frames of one span of a video, model-sized and upright.

Two backends sit behind one small interface (``FrameBackend``): decord and PyAV. The
configured one goes first; when it cannot open or decode the file, or reports
timestamps that cannot be true, the other one carries on from where it stopped and
the result says so in ``notes``.

One module per concern:

- ``backend``: what ``decode_part`` and the decoders hand each other, and the decoder
  thread setting (``backend.DECODE_THREADS``; set it there)
- ``clock``: which frame stands for each sampling time, and the coverage notes
- ``images``: picture sizes, rotation, the shot scan's picture
- ``container``: what is read from the container beside the frames
- ``pyav_backend``, ``decord_backend``: the two full decoders
- ``keyframes``: the keyframe path (PyAV), which decodes only what the sampler needs
  when keyframes are close enough
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from vidan.config import FrameConfig
from vidan.media.frames.backend import DecodedFrames, FrameBackend, RawFrame, _error_text
from vidan.media.frames.clock import _CallbackError, _frames_expected, _Picker
from vidan.media.frames.container import _coded_size
from vidan.media.frames.decord_backend import DecordBackend, TimestampError
from vidan.media.frames.images import display_width, model_size, scan_dims, scan_image, upright
from vidan.media.frames.keyframes import MAX_KEY_GAP_S, _keyframe_path, _Sent
from vidan.media.frames.pyav_backend import PyAVBackend
from vidan.records import STAGE_DECODE, MediaError, MediaInfo, Span

__all__ = ["BACKENDS", "DecodedFrames", "DecordBackend", "FrameBackend", "MAX_KEY_GAP_S", "PyAVBackend",
           "RawFrame", "TimestampError", "decode_part", "display_width", "model_size", "scan_dims", "scan_image",
           "upright"]


def decode_part(path, info: MediaInfo, span: Span, cfg: FrameConfig,
                on_scan: Optional[Callable[[float, np.ndarray], None]] = None,
                scan_span: Optional[Span] = None,
                on_sample: Optional[Callable[[float, np.ndarray], None]] = None,
                fast: bool = True) -> DecodedFrames:
    """Sample ``span`` of the video for the image model (and the shot scanner).

    Model frames: the frame displayed at ``span.start_s + (k + 0.5) / cfg.sample_fps``
    for each such time inside the span, each frame once; a span shorter than one
    interval still gives its first frame. On the keyframe path (``keyframes``) the
    keyframe nearest each such time instead. ``times_s`` is always each frame's own
    presentation time. ``on_scan(t_s, rgb)`` receives, in time
    order, the frame displayed at every ``k / cfg.scan_fps`` (from the file's start)
    inside ``scan_span`` (default: ``span``), ``cfg.scan_width`` pixels wide. A scan
    span wider than ``span`` gives the shot detector the context around a part; only
    ``span`` counts for the model frames, the frame counts and the notes.
    ``on_sample(t_s, rgb)`` receives each model frame as it is chosen, upright, short
    side ``cfg.detect_side``, for detectors that need more pixels than the model.
    ``fast=False`` decodes every frame through the configured backend.
    """
    if not info.has_video:
        raise MediaError(STAGE_DECODE, "no video stream")
    width, height = info.width, info.height
    if not width or not height:
        width, height = _coded_size(str(path))
    # the decoders scale straight to these sizes, so squeezed pixels come out square
    width = display_width(width, info.sample_aspect)
    size = model_size(width, height, info.rotation, cfg)
    # detectors get more pixels than the model, but never more than the file has:
    # decoding a 360p file at 480p costs several times the decode and shows nothing new
    detect = (model_size(width, height, info.rotation,
                         replace(cfg, model_size=max(cfg.model_size, min(cfg.detect_side, width, height))))
              if on_sample is not None else None)
    fast_note = None
    if fast:
        sent = _Sent(on_scan, on_sample)
        try:
            out = _keyframe_path(str(path), info, span, cfg, size, detect, scan_span, sent)
        except _CallbackError as e:
            raise e.__cause__ from None
        except MemoryError:
            raise
        except Exception as e:  # the full decode below reads what this one could not
            out = None
            fast_note = f"keyframe path failed ({_error_text(e)}), decoded every frame"
        if out is not None:
            return out
        if sent.scan_t > -math.inf or sent.sample_t > -math.inf:
            # what the caller already has is not sent twice
            on_scan, on_sample = sent.after(on_scan, sent.scan_t), sent.after(on_sample, sent.sample_t)
    picker = _Picker(span, cfg, on_scan, scan_span, on_sample=on_sample, detect_size=detect)

    order = [cfg.backend] + ([n for n in BACKENDS if n != cfg.backend] if cfg.fallback else [])
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    fallback: Optional[str] = None
    used: Optional[str] = None
    fed_by = order[0]  # the backend that delivered the latest frames
    for name in order:
        backend_notes: list[str] = []
        before = picker.frames_decoded
        if name == "decord":
            extra = {"read_size": detect} if detect is not None else {}
        else:  # PyAV scales each scan frame straight from the decoded planes to the scan's size
            extra = {"scan_size": scan_dims(size, cfg.scan_width)} if on_scan is not None else {}
        frames = BACKENDS[name].iter_frames(str(path), info, picker.resume_span(), size, backend_notes, **extra)
        try:
            try:
                for frame in frames:
                    if not picker.feed(*frame):
                        break
            finally:
                frames.close()  # ends the decoder now, so its notes are complete
            picker.finish()
        except _CallbackError as e:
            raise e.__cause__ from None  # the caller's own error, not the decoder's
        except MemoryError:
            raise
        except Exception as e:  # any failure of this backend: the next one carries on
            failures.append((name, _error_text(e)))
            notes.extend(backend_notes)
            picker.abort()
            if picker.frames_decoded > before:
                fed_by = name
            continue
        notes.extend(backend_notes)
        used = name
        break

    if used is None and picker.frames_decoded == 0:
        raise MediaError(STAGE_DECODE, "; ".join(f"{n}: {text}" for n, text in failures))
    if used is None:
        used = fed_by
        notes.append("decoding stopped early: " + "; ".join(f"{n}: {text}" for n, text in failures))
    elif failures:
        fallback = "; ".join(f"{n} failed ({text})" for n, text in failures) + f", used {used}"
    notes.extend(picker.coverage_notes(info))
    if fast_note:
        notes.append(fast_note)
    expected = _frames_expected(info, span)

    images = (np.stack(picker.images) if picker.images
              else np.zeros((0, size[1], size[0], 3), np.uint8))
    return DecodedFrames(
        times_s=np.asarray(picker.times, np.float64),
        images=images,
        backend=used,
        frames_decoded=picker.frames_decoded,
        frames_expected=expected,
        notes=notes,
        fallback=fallback,
    )


BACKENDS: dict[str, FrameBackend] = {"decord": DecordBackend(), "pyav": PyAVBackend()}
