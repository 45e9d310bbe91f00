"""Typed configuration. Every report row carries ``Config.hash()`` and the model ids.

A config is a tree of frozen dataclasses. ``Config.from_dict`` accepts the same tree as
plain dicts (from TOML or YAML) and rejects unknown keys, so a typo is an error rather
than a silently ignored option.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SegmentConfig:
    plan: str = "shots+speech"  # "fixed" | "shots" | "shots+speech"
    window_s: float = 10.0  # length of fixed windows
    min_s: float = 1.0  # shots shorter than this are merged into a neighbour
    max_s: float = 20.0  # longer shots are split
    pause_search_s: float = 1.5  # how far a boundary may move to reach a speech pause

    def validate(self) -> None:
        if self.plan not in ("fixed", "shots", "shots+speech"):
            raise ConfigError(f"segments.plan must be fixed, shots or shots+speech, not {self.plan!r}")
        if not (0 < self.min_s <= self.max_s):
            raise ConfigError("segments: need 0 < min_s <= max_s")
        if self.window_s <= 0:
            raise ConfigError("segments.window_s must be positive")


@dataclass(frozen=True)
class FrameConfig:
    # "pyav" | "decord"; the other one is the fallback. Files whose keyframes are at most
    # 2 s apart take PyAV's keyframe path instead, whichever is named (media/frames/).
    # PyAV by default: it converts only the frames asked for, at the size each is asked
    # for, where decord scales every decoded frame to one size in its filter graph, so
    # the detectors' larger frames cost decord 3-4x its decode (60 s of 360p: 4.8 s, PyAV 1.4 s).
    backend: str = "pyav"
    fallback: bool = True
    sample_fps: float = 1.0  # frames a second sent to the image model
    model_size: int = 224  # short side of frames given to the model
    scan_fps: float = 8.0  # frames a second looked at by the shot detector
    scan_width: int = 96
    max_decode_side: int = 1280  # frames larger than this are downscaled while decoding
    detect_side: int = 480  # short side of the sampled frames handed to decode_part's on_sample

    def validate(self) -> None:
        if self.backend not in ("decord", "pyav"):
            raise ConfigError(f"frames.backend must be decord or pyav, not {self.backend!r}")
        if self.sample_fps <= 0 or self.scan_fps <= 0:
            raise ConfigError("frames.sample_fps and frames.scan_fps must be positive")
        if self.detect_side <= 0:
            raise ConfigError("frames.detect_side must be positive")


@dataclass(frozen=True)
class ShotConfig:
    threshold: float = 27.0  # PySceneDetect ContentDetector threshold
    fade_threshold: float = 12.0  # mean brightness under which a frame counts as black
    min_shot_s: float = 0.6


@dataclass(frozen=True)
class AsrConfig:
    backend: str = "faster-whisper"  # "faster-whisper" | "openai-whisper" | "none"
    model: str = "base"  # a bundled name, a local model folder, or an openai-whisper checkpoint
    language: Optional[str] = None  # None: detect
    beam_size: int = 5
    vad: bool = True
    compute_type: str = "int8"
    # Under this probability Whisper's language guess is checked by decoding the likeliest
    # candidates and keeping the most probable transcript (0 never checks).
    language_threshold: float = 0.8
    languages: Optional[tuple[str, ...]] = None  # allow-list of language codes; None: all
    batch_size: int = 8  # 30-second windows decoded together
    # True: short clips share Whisper's windows, up to about 18 s of speech a window
    # (vidan.models.asr.windows.SHARED_FILL_S). Off by default: windows are encoded at their own
    # length (vidan.models.asr.windows.FIT_SLACK_S), so sharing saves nothing and costs words
    # (40 clips of 8 s: mean WER 0.023 shared, 0.016 a window each, 29 and 23 CPU-s).
    share_windows: bool = False

    def __post_init__(self) -> None:
        # TOML/YAML give lists, the command line may give "en,fr": keep one hashable form
        if isinstance(self.languages, str):
            object.__setattr__(self, "languages", tuple(c.strip() for c in self.languages.split(",") if c.strip()))
        elif isinstance(self.languages, list):
            object.__setattr__(self, "languages", tuple(self.languages))

    def validate(self) -> None:
        if self.backend not in ("faster-whisper", "openai-whisper", "none"):
            raise ConfigError(f"asr.backend must be faster-whisper, openai-whisper or none, not {self.backend!r}")
        if not 0.0 <= self.language_threshold <= 1.0:
            raise ConfigError("asr.language_threshold must be between 0 and 1")
        if self.batch_size < 1 or self.beam_size < 1:
            raise ConfigError("asr.batch_size and asr.beam_size must be at least 1")
        if self.languages is not None:
            if not isinstance(self.languages, tuple) or not self.languages or not all(
                    isinstance(c, str) and c.isalpha() and c.islower() and 2 <= len(c) <= 3 for c in self.languages):
                raise ConfigError(f"asr.languages must be a non-empty list of language codes such as "
                                  f"[\"en\", \"fr\"], not {self.languages!r}")
            if self.language is not None and self.language not in self.languages:
                raise ConfigError(f"asr.language {self.language!r} is not in asr.languages {list(self.languages)}")


@dataclass(frozen=True)
class FusionConfig:
    visual_weight: float = 0.5
    text_weight: float = 0.5


@dataclass(frozen=True)
class TagConfig:
    taxonomy: Optional[str] = None  # path to a YAML or TOML taxonomy; None: the bundled one
    threshold: float = 0.30  # minimum cosine for a classification tag
    top_k: int = 3
    visual_top_k: int = 5
    visual_min_score: float = 0.05
    keywords: int = 8


@dataclass(frozen=True)
class LimitConfig:
    part_s: float = 600.0  # long videos are split into parts of this length
    # The pictures are split finer: decoding part k + 1 overlaps encoding part k, and a
    # long file keeps many decoders busy. (Speech keeps the longer parts: a seam can cut
    # a word, a picture is whole on either side of one.)
    frames_part_s: float = 120.0
    file_timeout_s: float = 900.0  # per part and stage
    memory_mb: int = 4096  # per decoding process

    def validate(self) -> None:
        for name in ("part_s", "frames_part_s", "file_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"limits.{name} must be a positive number of seconds, not {value!r}")


@dataclass(frozen=True)
class DetectConfig:
    """People and faces in the sampled frames; sound events in the audio."""

    faces: bool = True
    people: bool = True
    sound_events: bool = True
    face_threshold: float = 0.5
    person_min_score: float = 2.0  # HOG's own score: 2.0 kept false positives out in tests
    # Detectors look at one sampled frame every this many seconds (0: every sampled
    # frame): they cost more than decoding, and a person or face stays in view longer.
    every_s: float = 2.0
    # Speech recognition runs on a part only when the sound-event model's speech
    # probability reaches this somewhere in it (voice activity alone hears speech in music).
    speech_gate: float = 0.3

    def validate(self) -> None:
        if not 0.0 <= self.speech_gate <= 1.0:
            raise ConfigError("detect.speech_gate must be between 0 and 1")
        if self.every_s < 0:
            raise ConfigError("detect.every_s must be 0 or more")


@dataclass(frozen=True)
class WorkerConfig:
    """How the Ray executor sizes its pools. Resources only: never part of the results."""

    # On a cluster with no GPU up yet, encoders wait this long for the autoscaler to
    # start one before running on CPU (0: never wait, as on a laptop).
    gpu_wait_s: float = 0.0
    gpus: int = 1  # GPUs asked of the autoscaler when none is up
    replan_s: float = 5.0  # how often pools are re-planned from the cluster and measured demand
    # A GPU pool is kept through lulls this long: reloading models costs minutes.
    gpu_keep_s: float = 600.0
    # A pool grows only for work that outlasts a model load (1 to 2 s for the CPU
    # models) by far: this many seconds of measured work left per actor. At 20 s a
    # folder's speech ran on one actor while the core decoding had freed sat idle.
    grow_min_s: float = 6.0
    # An actor Ray has not started after this long is reported (what it asks for, what the
    # cluster has free): on a cluster busy with other jobs the run would otherwise wait
    # without a word.
    place_warn_s: float = 60.0

    def validate(self) -> None:
        if self.gpu_wait_s < 0 or self.gpus < 0 or self.replan_s <= 0 or self.place_warn_s <= 0:
            raise ConfigError("workers: gpu_wait_s and gpus must be >= 0, replan_s and place_warn_s positive")


@dataclass(frozen=True)
class CommitConfig:
    """How often a run commits to the report: a killed run loses at most one batch."""

    videos: int = 8  # commit after this many finished videos...
    seconds: float = 60.0  # ...or this long after the previous commit, whichever comes first

    def validate(self) -> None:
        if self.videos < 1 or self.seconds <= 0:
            raise ConfigError("commit: videos must be at least 1 and seconds positive")


@dataclass(frozen=True)
class Config:
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    tags: TagConfig = field(default_factory=TagConfig)
    limits: LimitConfig = field(default_factory=LimitConfig)
    commit: CommitConfig = field(default_factory=CommitConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    workers: WorkerConfig = field(default_factory=WorkerConfig)

    def validate(self) -> "Config":
        for f in fields(self):
            sub = getattr(self, f.name)
            if hasattr(sub, "validate"):
                sub.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """Hash of everything that changes results: all but the resource bounds.

        Part length stays in: where parts split changes words and shots at the seams.
        """
        d = self.to_dict()
        d["limits"] = {k: d["limits"][k] for k in ("part_s", "frames_part_s")}
        d.pop("commit")
        d.pop("workers")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **sections: Any) -> "Config":
        """``cfg.replace(asr={"backend": "none"})``: a copy with some fields changed."""
        merged = self.to_dict()
        for name, values in sections.items():
            if name not in merged:
                raise ConfigError(f"unknown config section {name!r}")
            merged[name].update(values)
        return Config.from_dict(merged)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return _build(cls, data, "").validate()

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_dict(load_mapping(path))


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (safe_load) or TOML file into a dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {p}: {e}") from e
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from e
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:  # includes the refusal of python/* tags
            raise ConfigError(f"{p}: not valid YAML (or not plain data): {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) in {where or 'config'}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, default, f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(value, bool):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value
