"""Audio stage: a part's sound, measured (voice activity, loudness, acoustic features,
sound events); speech recognition comes after, in its own stage, batched.

CPU work: ffmpeg extracts the samples (a child process), the rest is numpy and small
ONNX models.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vidan.config import Config
from vidan.records import HeardPart, Span

ACOUSTIC_HOP_S = 1.0


class AudioStage:
    def __init__(self, config: Config, device: str = "auto", threads: int = 0):
        self.config = config
        self.events = None
        if config.detect.sound_events:
            from vidan.models.sound_events import SoundEventModel

            self.events = SoundEventModel()

    def model_ids(self) -> dict[str, str]:
        return {"sound_events": self.events.model_id} if self.events is not None else {}

    def process(self, jobs: list) -> list[HeardPart]:
        return [self._one(job) for job in jobs]

    @staticmethod
    def split(part: HeardPart, k: int) -> list[HeardPart]:
        """``part`` as ``k`` pieces for speech recognition, each a run of whole Whisper
        windows with only its own samples (``window_runs``); the first piece also
        carries the part's measurements, the others none. Pieces past the speech are
        empty (nothing to recognise)."""
        from vidan.media.audio import SAMPLE_RATE
        from vidan.models.asr import window_runs

        runs = []
        if part.speech_allowed and part.heard_speech:
            runs = window_runs(part.audio, [(s.start_s - part.heard_start_s, s.end_s - part.heard_start_s)
                                            for s in part.heard_speech], k)
        out = []
        for j in range(k):
            a, b = runs[j] if j < len(runs) else (0, 0)
            lo, hi = part.heard_start_s + a / SAMPLE_RATE, part.heard_start_s + b / SAMPLE_RATE
            spoken = [Span(max(s.start_s, lo), min(s.end_s, hi)) for s in part.heard_speech
                      if s.end_s > lo and s.start_s < hi]
            piece = HeardPart(
                span=part.span, audio=part.audio[a:b].copy(), heard_start_s=lo, speech=[], heard_speech=spoken,
                speech_allowed=part.speech_allowed, loudness_db=np.zeros(0, np.float32), acoustic=None,
                samples_decoded_s=0.0, events=None, events_hop_s=part.events_hop_s)
            out.append(piece)
        if not runs:  # no speech to share out: the whole part goes as the first piece
            out[0] = part
        else:
            out[0] = replace(part, audio=out[0].audio, heard_start_s=out[0].heard_start_s,
                             heard_speech=out[0].heard_speech)
        return out

    def _one(self, job) -> HeardPart:
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
        events, allowed, hop_s = None, bool(heard_speech), 0.96
        if self.events is not None and len(audio):
            scores = self.events.scores(audio)
            hop_s = self.events.hop_s
            # Voice activity hears speech in music; Whisper then spends seconds in
            # temperature fallback inventing words. Recognition runs only where the
            # sound-event model hears speech too.
            from vidan.models.sound_events import speech_probability

            if len(scores):
                allowed = allowed and float(speech_probability(scores).max()) >= self.config.detect.speech_gate
            skip = int(round((span.start_s - heard.start_s) / hop_s))
            n_own = max(1, int(np.ceil(span.duration_s / hop_s)))
            events = scores[skip:skip + n_own].astype(np.float16)
        return HeardPart(
            span=span, audio=audio, heard_start_s=heard.start_s, speech=speech, heard_speech=heard_speech,
            speech_allowed=allowed, loudness_db=loudness_db(own, hop_s=0.1, rate=SAMPLE_RATE),
            acoustic=np.stack(acoustic).astype(np.float32) if acoustic else None,
            samples_decoded_s=len(own) / SAMPLE_RATE, notes=list(notes), events=events, events_hop_s=hop_s,
        )
