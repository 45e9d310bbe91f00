"""Decode stage: a part's frames, sampled, cropped to the image model's input, with the
shot cuts found in the same pass and the people and faces seen in each sampled frame.

Runs on CPU (one core an actor, as many actors as the cluster has cores for). Native
decoding runs in an isolated child (``IsolatedWorker``, one long-lived child an actor),
so a decoder that crashes, hangs or eats memory fails one part, not the worker.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import numpy as np

from vidan.config import Config
from vidan.records import STAGE_DECODE, DecodedPart, MediaInfo, Span

_log = logging.getLogger(__name__)
# A decord child gets this long for a part (seconds of media times DECORD_GUARD_X, at
# least DECORD_GUARD_MIN_S) before PyAV decodes it instead: the full decode runs at 30
# to 100 times real time on one core at 360p, and at about real time for 4K.
DECORD_GUARD_X = 4.0
DECORD_GUARD_MIN_S = 60.0


def scan_part(path: str, info: MediaInfo, span: Span, config: Config, on_sample=None):
    """Decode one part and detect its shots in the same pass.

    The detector also sees the scan frames on both sides of the part (``shots.context_s``)
    and reports only the cuts inside it, so each cut is found once, by the part it falls
    in, as a scan of the whole file finds it: the part boundaries invent none.
    """
    from vidan.media.frames import decode_part
    from vidan.shots import ShotDetector, context_s

    context = context_s(config.shots)
    scan = Span(max(0.0, span.start_s - context), span.end_s + context)
    detector = ShotDetector(config.shots)
    kwargs = {"on_sample": on_sample} if on_sample is not None else {}
    decoded = decode_part(path, info, span, config.frames, on_scan=detector.push, scan_span=scan, **kwargs)
    return decoded, [c for c in detector.finish() if span.start_s <= c.t_s < span.end_s]


class _Detections:
    """Faces and people in each sampled frame, found while the frame is at hand."""

    def __init__(self, config: Config):
        cfg = config.detect
        self.faces = self.people = None
        if cfg.faces or cfg.people:
            import cv2

            cv2.setNumThreads(1)  # one core a decoder: OpenCV would take them all
        if cfg.faces:
            from vidan.models.faces import FaceDetector

            # 480 px on the long side: CenterFace still finds faces a tenth of the
            # frame high, at half the cost of 640
            self.faces = FaceDetector(threshold=cfg.face_threshold, side=480)
        if cfg.people:
            from vidan.models.people import PersonDetector

            self.people = PersonDetector(min_score=cfg.person_min_score)
        self.every_s = cfg.every_s
        self.last_t: Optional[float] = None
        self.n_faces: list[int] = []
        self.best_person: list[float] = []
        self.boxes: list[Optional[list]] = []

    @property
    def active(self) -> bool:
        return self.faces is not None or self.people is not None

    def __call__(self, t_s: float, rgb: np.ndarray) -> None:
        # a part's first frame is always looked at, so every part has detections
        if self.last_t is not None and t_s < self.last_t + self.every_s - 1e-6:
            self.n_faces.append(-1)
            self.best_person.append(float("nan"))
            self.boxes.append(None)
            return
        self.last_t = t_s
        faces = self.faces.detect(rgb) if self.faces is not None else []
        people = self.people.detect(rgb) if self.people is not None else []
        found = list(faces) + list(people)
        self.n_faces.append(len(faces))
        self.best_person.append(max((b.score for b in people), default=0.0))
        self.boxes.append(found)


def decode_for_model(path: str, info: MediaInfo, span: Span, config: Config) -> DecodedPart:
    """The decode stage's work on one part, in the isolated child."""
    from vidan.models.vision import INPUT_SIZE, center_crop_square

    det = _Detections(config)
    decoded, cuts = scan_part(path, info, span, config, on_sample=det if det.active else None)
    images = (np.stack([center_crop_square(im, INPUT_SIZE) for im in decoded.images]) if len(decoded.images)
              else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))
    n = len(decoded.times_s)
    detected = det.active and len(det.boxes) == n
    return DecodedPart(
        span=span, times_s=np.asarray(decoded.times_s, np.float64), images=images, cuts=cuts,
        backend=decoded.backend, frames_decoded=decoded.frames_decoded, frames_expected=decoded.frames_expected,
        notes=list(decoded.notes), fallback=decoded.fallback,
        faces=np.asarray(det.n_faces, np.int16) if detected and det.faces is not None else None,
        people=np.asarray(det.best_person, np.float32) if detected and det.people is not None else None,
        boxes=det.boxes if detected else None,
    )


class DecodeStage:
    def __init__(self, config: Config, device: str = "auto", threads: int = 0):
        self.config = config
        # loaded here once so a missing model fails the run at start, not every part;
        # the isolated child loads its own copy (the models are small)
        det = _Detections(config)
        self._ids = {k: d.model_id for k, d in (("faces", det.faces), ("people", det.people)) if d is not None}
        self._child = None

    def model_ids(self) -> dict[str, str]:
        return dict(self._ids)

    def process(self, jobs: list) -> list:
        return [self._one(job) for job in jobs]

    def close(self) -> None:
        """End the decoding child now (it also goes when this stage is collected)."""
        if self._child is not None:
            self._child.close()

    def _one(self, job) -> DecodedPart:
        from vidan.media.isolate import DecoderFailed

        lim, frames = self.config.limits, self.config.frames
        with job.local() as path:
            if frames.backend != "decord" or not frames.fallback:
                return self._call(path, job, self.config, lim.file_timeout_s)
            # decord can loop for ever inside its seek (dmlc/decord#269; here an interlaced
            # H.264 TS of 20 s ran past the 900-s deadline, where PyAV took a second), and
            # can crash. Neither can be caught in the child, so the child gets a deadline
            # of its own and the part is decoded again by PyAV.
            guard = min(lim.file_timeout_s, max(DECORD_GUARD_MIN_S, DECORD_GUARD_X * job.span.duration_s))
            try:
                return self._call(path, job, self.config, guard)
            except DecoderFailed as e:
                said = e.message.splitlines()[0][:160] if e.message else "no message"
                from vidan.report import display_path  # a raw name that is not UTF-8 breaks a UTF-8 log

                _log.warning("decord gave up on %s at %.0f-%.0f s (%s): decoding it with PyAV", display_path(path),
                             job.span.start_s, job.span.end_s, said)
                part = self._call(path, job, self.config.replace(frames={"backend": "pyav"}), lim.file_timeout_s)
                return replace(part, fallback=f"decord failed ({said}), used pyav")

    def _call(self, path: str, job, config: Config, timeout_s: float) -> DecodedPart:
        from vidan.media.isolate import IsolatedWorker

        if self._child is None:
            self._child = IsolatedWorker(memory_mb=config.limits.memory_mb)
        return self._child.call(
            "vidan.stages.decode:decode_for_model",
            dict(path=path, info=job.info, span=job.span, config=config),
            stage=STAGE_DECODE, timeout_s=timeout_s,
        )


