"""The three model-holding stages, as plain classes.

Each loads its models once in ``__init__`` and does one unit of work in ``__call__``.
The Ray actors in ``workers/`` are thin wrappers around them; ``LocalExecutor`` calls
them in-process. Native decoding runs in an isolated child process (``run_isolated``)
so a decoder that crashes, hangs or eats memory fails one file, not the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from vidan.config import Config
from vidan.records import STAGE_AUDIO, STAGE_DECODE, STAGE_FUSE, AudioPart, FramePart, MediaInfo, Span, VidanError

ACOUSTIC_HOP_S = 1.0

# The three stage kinds an executor runs, and the report stage named when one fails
# without saying more (a crashed worker, an unexpected exception).
VISUAL, AUDIO, FINISH = "visual", "audio", "finish"
STAGE_OF_KIND = {VISUAL: STAGE_DECODE, AUDIO: STAGE_AUDIO, FINISH: STAGE_FUSE}


@dataclass(frozen=True)
class PartJob:
    """One part (a time span) of one video, for the visual or audio stage."""

    video_id: str
    path: str
    info: MediaInfo
    span: Span
    part_index: int
    n_parts: int
    # object storage inputs: the worker copies the object to node-local scratch first
    etag: str = ""
    storage_options: Optional[dict] = None

    def local(self):
        """A context giving a local path to decode (the file itself, or a scratch copy)."""
        from vidan.sources import local_copy

        return local_copy(self.path, self.etag, self.storage_options, self.info.size_bytes)


def scan_part(path: str, info: MediaInfo, span: Span, config: Config):
    """Decode one part and detect its shots in the same pass. Runs in the isolated child.

    The detector also sees the scan frames on both sides of the part (``shots.context_s``)
    and reports only the cuts inside it, so each cut is found once, by the part it falls
    in, as a scan of the whole file finds it: the part boundaries invent none.
    """
    from vidan.media.frames import decode_part
    from vidan.shots import ShotDetector, context_s

    context = context_s(config.shots)
    scan = Span(max(0.0, span.start_s - context), span.end_s + context)
    detector = ShotDetector(config.shots)
    decoded = decode_part(path, info, span, config.frames, on_scan=detector.push, scan_span=scan)
    return decoded, [c for c in detector.finish() if span.start_s <= c.t_s < span.end_s]


class VisualStage:
    """Frames of a part -> class probabilities per sampled frame, plus shot cuts."""

    def __init__(self, config: Config, device: str = "auto"):
        from vidan.models.device import pick_device
        from vidan.models.vision import load_classifier

        self.config = config
        self.device = pick_device(device)
        self.classifier = load_classifier(self.device)
        self.model_id = self.classifier.model_id

    def __call__(self, job: PartJob) -> FramePart:
        from vidan.media.isolate import run_isolated

        lim = self.config.limits
        with job.local() as path:
            decoded, cuts = run_isolated(
                "vidan.stages:scan_part",
                dict(path=path, info=job.info, span=job.span, config=self.config),
                stage=STAGE_DECODE, timeout_s=lim.file_timeout_s, memory_mb=lim.memory_mb,
            )
        if len(decoded.images):
            probs = self.classifier.probs(decoded.images).astype(np.float32)
        else:
            probs = np.zeros((0, len(self.classifier.labels)), np.float32)
        return FramePart(
            span=job.span, times_s=np.asarray(decoded.times_s, np.float64), probs=probs, cuts=cuts,
            backend=decoded.backend, frames_decoded=decoded.frames_decoded,
            frames_sampled=len(decoded.times_s), frames_expected=decoded.frames_expected,
            notes=list(decoded.notes), fallback=decoded.fallback,
        )


class AudioStage:
    """Audio of a part -> voice activity, loudness, acoustic features and words."""

    def __init__(self, config: Config, device: str = "auto", cpu_threads: int = 0):
        from vidan.models.device import pick_device

        self.config = config
        self.device = pick_device(device)
        self.asr = None
        self.model_id = "none"
        if config.asr.backend != "none":
            from vidan.models.asr import load_asr

            self.asr = load_asr(config.asr, device=self.device, cpu_threads=cpu_threads)
            self.model_id = self.asr.model_id

    def __call__(self, job: PartJob) -> AudioPart:
        from vidan.assemble import PART_CONTEXT_S
        from vidan.media.audio import SAMPLE_RATE, extract_audio
        from vidan.models.audio_features import acoustic_embedding, loudness_db, speech_spans
        from vidan.segments import with_context

        span = job.span
        # Heard with context, so speech cut by the part boundary is whole; only the words
        # leave the part's span, and assemble.stitch_words keeps each of them once.
        heard = with_context(span, job.info.duration_s, PART_CONTEXT_S) if job.n_parts > 1 else span
        with job.local() as path:
            audio, notes = extract_audio(path, job.info, heard, own=span, timeout_s=self.config.limits.file_timeout_s)
        first = int(round((span.start_s - heard.start_s) * SAMPLE_RATE))
        own = audio[first:first + int(round(span.duration_s * SAMPLE_RATE))]
        heard_speech = speech_spans(audio, offset_s=heard.start_s, rate=SAMPLE_RATE)
        speech = [Span(max(s.start_s, span.start_s), min(s.end_s, span.end_s))
                  for s in heard_speech if s.overlap(span) > 0]
        hop = int(ACOUSTIC_HOP_S * SAMPLE_RATE)
        acoustic = [acoustic_embedding(own[i:i + hop], rate=SAMPLE_RATE) for i in range(0, len(own), hop)]
        acoustic = [a for a in acoustic if a is not None]
        words, language, lang_p, nsp = [], None, None, None
        # Whisper invents text on music and noise; where voice activity found no speech
        # at all there is nothing to transcribe.
        if self.asr is not None and heard_speech:
            t = self.asr.transcribe(audio, offset_s=heard.start_s, language=self.config.asr.language)
            words, language, lang_p, nsp = t.words, t.language, t.language_probability, t.no_speech_prob
        return AudioPart(
            span=span, words=list(words), language=language, language_probability=lang_p,
            no_speech_prob=nsp, speech=speech, loudness_hop_s=0.1,
            loudness_db=loudness_db(own, hop_s=0.1, rate=SAMPLE_RATE),
            acoustic=np.stack(acoustic).astype(np.float32) if acoustic else None, acoustic_hop_s=ACOUSTIC_HOP_S,
            samples_decoded_s=len(own) / SAMPLE_RATE, notes=list(notes),
        )


PartResult = Union[FramePart, AudioPart, VidanError]


class FinishStage:
    """A video's part results -> segment rows with embeddings and tags."""

    def __init__(self, config: Config, device: str = "auto"):
        from vidan.labels import label_bank
        from vidan.models.device import pick_device
        from vidan.models.text import load_text_encoder
        from vidan.models.vision import imagenet_labels
        from vidan.tags import class_embeddings, load_taxonomy

        self.config = config
        self.device = pick_device(device)
        self.text = load_text_encoder(self.device)
        self.labels = imagenet_labels()
        self.label_emb = label_bank(self.text, self.labels)
        self.taxonomy = load_taxonomy(config.tags.taxonomy)
        self.class_emb = class_embeddings(self.taxonomy, self.text.encode)
        self.model_id = self.text.model_id

    def __call__(self, video_id: str, path: str, parts, provenance: dict):
        from vidan.assemble import gather
        from vidan.rows import segment_rows

        t0 = time.perf_counter()
        feats = gather(parts, self.config)
        rows = segment_rows(video_id, path, feats, self, provenance)
        return rows, time.perf_counter() - t0
