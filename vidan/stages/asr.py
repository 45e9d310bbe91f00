"""Speech recognition stage: heard parts of many videos recognised in one batched call
(short clips share Whisper's 30-second windows instead of each paying a full one).
GPU when the cluster has one."""

from __future__ import annotations

from dataclasses import replace
from typing import Union

from vidan.config import Config
from vidan.records import STAGE_ASR, AudioPart, HeardPart, VidanError


class AsrStage:
    def __init__(self, config: Config, device: str = "auto", threads: int = 0):
        from vidan.models.device import pick_device

        self.config = config
        self.device = pick_device(device, "ctranslate2" if config.asr.backend == "faster-whisper" else "torch")
        self.asr = None
        if config.asr.backend != "none":
            from vidan.models.asr import load_asr

            self.asr = load_asr(config.asr, device=self.device, cpu_threads=threads)

    def model_ids(self) -> dict[str, str]:
        return {"asr": self.asr.model_id if self.asr is not None else "none"}

    def process(self, parts: list[HeardPart]) -> list[AudioPart]:
        todo = [i for i, p in enumerate(parts) if self.asr is not None and p.heard_speech and p.speech_allowed]
        transcripts = dict(zip(todo, self._transcribe([parts[i] for i in todo]))) if todo else {}
        out = []
        for i, p in enumerate(parts):
            t = transcripts.get(i)
            out.append(AudioPart(
                span=p.span, words=list(t.words) if t else [], language=t.language if t else None,
                language_probability=t.language_probability if t else None,
                no_speech_prob=t.no_speech_prob if t else None, speech=p.speech, loudness_hop_s=0.1,
                loudness_db=p.loudness_db, acoustic=p.acoustic, acoustic_hop_s=1.0,
                samples_decoded_s=p.samples_decoded_s, notes=list(p.notes), events=p.events,
                events_hop_s=p.events_hop_s,
                detected_language=getattr(t, "detected_language", None) if t else None,
                detected_probability=getattr(t, "detected_probability", None) if t else None,
            ))
        return out

    def _transcribe(self, parts: list[HeardPart]) -> list:
        lang = self.config.asr.language
        many = getattr(self.asr, "transcribe_many", None)
        if many is None:
            return [self.asr.transcribe(p.audio, offset_s=p.heard_start_s, language=lang) for p in parts]
        from vidan.models.asr import SpeechItem

        return many([SpeechItem(audio=p.audio, offset_s=p.heard_start_s, language=lang,
                                speech=[(s.start_s - p.heard_start_s, s.end_s - p.heard_start_s)
                                        for s in p.heard_speech]) for p in parts])


def join_pieces(pieces: list) -> Union[AudioPart, BaseException]:
    """One part's result from its pieces (``AudioStage.split``), in order: every
    piece's words in time order, the measurements of the first, the language that most
    words were heard in, and the highest no-speech probability (one doubtful window
    makes the whole transcript suspect, as in ``Transcript``). A piece that failed
    fails the part."""
    for p in pieces:
        if isinstance(p, BaseException):
            return p
        if not isinstance(p, AudioPart):
            return VidanError(STAGE_ASR, f"a piece of the part came back as {type(p).__name__}")
    from vidan.assemble import vote_language

    first = pieces[0]
    words = sorted((w for p in pieces for w in p.words), key=lambda w: (w.start_s, w.end_s))
    nsp = [p.no_speech_prob for p in pieces if p.no_speech_prob is not None]

    language, probability = vote_language(pieces)
    detected, detected_p = vote_language(pieces, "detected_language", "detected_probability")
    return replace(first, words=words, language=language, language_probability=probability,
                   no_speech_prob=max(nsp) if nsp else None, detected_language=detected,
                   detected_probability=detected_p)
