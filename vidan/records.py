"""Plain data that flows between vidan's stages.

Nothing here imports a media library, a model or Ray: every type can be built by hand
in a test. Times are seconds (float) measured from the start of the container's
presentation timeline, taken from presentation timestamps, never ``index / fps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# Status of one input file in the ``videos`` report.
OK = "ok"
PARTIAL = "partial"
FAILED = "failed"

# Stages named in ``error_stage``.
STAGE_DISCOVER = "discover"
STAGE_PROBE = "probe"
STAGE_DECODE = "decode"
STAGE_AUDIO = "audio"
STAGE_FUSE = "fuse"


class VidanError(Exception):
    """An error about one input that carries the stage and the real cause.

    ``message`` is what the failing tool said (ffmpeg's stderr, the decoder's own
    words), so it can go straight into the report's ``error_message``.
    """

    def __init__(self, stage: str, message: str):
        super().__init__(f"[{stage}] {message}")
        self.stage = stage
        self.message = message

    def __reduce__(self):  # keep stage and message when pickled across processes
        return (type(self), (self.stage, self.message))


class MediaError(VidanError):
    """The file could not be read as media (probe, decode or audio extraction)."""


@dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str  # "video" | "audio" | "subtitle" | "data" | "attachment"
    codec: Optional[str]
    language: Optional[str] = None


@dataclass(frozen=True)
class MediaInfo:
    """What probing one file found. Built by ``vidan.media.probe``."""

    path: str
    size_bytes: int
    container: str
    duration_s: float
    start_time_s: float
    streams: tuple[StreamInfo, ...]
    video_codec: Optional[str] = None
    width: Optional[int] = None  # coded width, before rotation
    height: Optional[int] = None
    frame_rate: Optional[str] = None  # exact fraction such as "30000/1001"
    frame_count: Optional[int] = None  # from the container; may be absent or wrong
    rotation: int = 0  # degrees clockwise needed to show the picture upright: 0/90/180/270
    # Shape of one coded pixel, "64/45" (a 720x576 picture shown 16:9); None: square.
    sample_aspect: Optional[str] = None
    audio_codec: Optional[str] = None
    audio_channels: Optional[int] = None
    audio_sample_rate: Optional[int] = None
    # Where each stream's header says it starts and ends (seconds on the same clock), when
    # it says. A stream shorter than the file is normal (audio ending early, video starting
    # after the sound); one that decodes shorter than its own header promised has lost data.
    video_start_s: Optional[float] = None
    video_end_s: Optional[float] = None
    audio_end_s: Optional[float] = None
    # Where the file's own clock restarts (recordings joined end to end), in seconds of
    # play: such a file is analysed through a copy on one continuous clock, and every
    # time above is that copy's (vidan.media.timeline).
    clock_jumps: tuple[float, ...] = ()

    @property
    def has_video(self) -> bool:
        return any(s.kind == "video" for s in self.streams)

    @property
    def has_audio(self) -> bool:
        return any(s.kind == "audio" for s in self.streams)

    @property
    def n_audio_streams(self) -> int:
        return sum(1 for s in self.streams if s.kind == "audio")

    @property
    def n_video_streams(self) -> int:
        return sum(1 for s in self.streams if s.kind == "video")


@dataclass(frozen=True)
class Span:
    """A half-open time interval [start_s, end_s)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def overlap(self, other: "Span") -> float:
        return max(0.0, min(self.end_s, other.end_s) - max(self.start_s, other.start_s))


@dataclass(frozen=True)
class Cut:
    """A shot boundary: the new shot starts at ``t_s``."""

    t_s: float
    kind: str = "cut"  # "cut" (hard cut) | "fade"
    score: float = 0.0


@dataclass(frozen=True)
class Box:
    """One detection in a frame: corners as fractions of the frame's width and height."""

    kind: str  # "face" | "person"
    x0: float
    y0: float
    x1: float
    y1: float
    score: float


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    """One planned segment of a video. Built by ``vidan.segments``."""

    index: int
    start_s: float
    end_s: float
    reason: str  # why it starts here: "start" | "shot_cut" | "fade" | "speech_pause" | "length_limit" | "window"
    keyframe_s: Optional[float] = None


@dataclass
class FramePart:
    """What the visual stage made of one part of one video.

    ``times_s`` are presentation times of the sampled frames; ``probs`` the image
    classifier's class probabilities for each of them. Frames themselves never
    leave the worker that decoded them.
    """

    span: Span
    times_s: np.ndarray  # float64 (N,)
    probs: np.ndarray  # float32 (N, n_classes)
    cuts: list[Cut]
    backend: str
    frames_decoded: int
    frames_sampled: int
    frames_expected: Optional[int] = None
    notes: list[str] = field(default_factory=list)  # losses worth reporting (partial)
    fallback: Optional[str] = None  # why the preferred frame backend was not used
    # What the people and face detectors saw in each sampled frame (None: not run).
    # Frames the detectors skipped (``detect.every_s``): faces -1, people NaN, boxes None.
    faces: Optional[np.ndarray] = None  # int16 (N,): faces found in each frame
    people: Optional[np.ndarray] = None  # float32 (N,): best person score in each frame, 0 for none
    boxes: Optional[list[Optional[list["Box"]]]] = None  # per frame: the detections, in image fractions


@dataclass
class AudioPart:
    """What the audio stage made of one part of one video."""

    span: Span
    words: list[Word]
    language: Optional[str]
    language_probability: Optional[float]
    no_speech_prob: Optional[float]
    speech: list[Span]  # voice activity, absolute times
    loudness_hop_s: float  # spacing of ``loudness_db``
    loudness_db: np.ndarray  # float32 RMS level in dBFS per hop, from span.start_s
    acoustic: Optional[np.ndarray] = None  # float32 (M, D): one acoustic embedding per acoustic_hop_s
    acoustic_hop_s: float = 1.0
    samples_decoded_s: float = 0.0  # seconds of audio actually decoded
    notes: list[str] = field(default_factory=list)
    # Sound events (None: not run): float16 (M, n_event_classes) scores, one row per
    # ``events_hop_s`` from span.start_s; the class names are the sound model's.
    events: Optional[np.ndarray] = None
    events_hop_s: float = 0.96
    # Whisper's own language guess, kept beside the final choice in ``language``.
    detected_language: Optional[str] = None
    detected_probability: Optional[float] = None


# Stage STAGE_DECODE hands DecodedPart to the image encoder; the audio stage hands
# HeardPart to speech recognition. Both travel between actors by reference: the driver
# never holds their frames or samples.
STAGE_VISION = "vision"
STAGE_ASR = "asr"


@dataclass
class DecodedPart:
    """Frames of one part, sampled and already cropped to the image model's input size."""

    span: Span
    times_s: np.ndarray  # float64 (N,): presentation times
    images: np.ndarray  # uint8 (N, S, S, 3): the model's square input, nothing larger
    cuts: list[Cut]
    backend: str
    frames_decoded: int
    frames_expected: Optional[int] = None
    notes: list[str] = field(default_factory=list)
    fallback: Optional[str] = None
    faces: Optional[np.ndarray] = None
    people: Optional[np.ndarray] = None
    boxes: Optional[list[list[Box]]] = None


@dataclass
class HeardPart:
    """The audio of one part, measured, waiting for speech recognition."""

    span: Span
    audio: np.ndarray  # float32 16 kHz mono, ``heard_start_s`` on: the part with its context
    heard_start_s: float
    speech: list[Span]  # voice activity in the part's own span
    heard_speech: list[Span]  # voice activity over everything heard (context included)
    speech_allowed: bool  # False: the sound-event model heard no speech, so nothing is transcribed
    loudness_db: np.ndarray
    acoustic: Optional[np.ndarray]
    samples_decoded_s: float
    notes: list[str] = field(default_factory=list)
    events: Optional[np.ndarray] = None
    events_hop_s: float = 0.96
