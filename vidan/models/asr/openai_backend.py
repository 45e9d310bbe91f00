"""The openai-whisper backend: a local checkpoint, one item at a time."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np

from vidan.config import AsrConfig
from vidan.models.asr.items import LanguageGuess
from vidan.models.asr.prepare import _first_speech, _Prepared
from vidan.models.asr.transcriber import _Decoded, _Whisper


def _whisper_cache_root() -> Path:
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


def load_openai_whisper(name: str, device: str = "cpu") -> tuple[Any, str]:
    """(model, model id). Loads the checkpoint with ``torch.load(weights_only=True)``
    ourselves: whisper decides that by comparing version strings, which is fragile."""
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    alignment_heads = None
    p = Path(name).expanduser()
    if p.is_file():
        ckpt_path = p.resolve()
        model_id = f"openai-whisper:{ckpt_path}"
    elif name in whisper._MODELS:
        url = whisper._MODELS[name]
        ckpt_path = _whisper_cache_root() / os.path.basename(url)
        if not ckpt_path.is_file():
            raise ValueError(
                f"openai-whisper model {name!r} is not in {ckpt_path.parent} and vidan never downloads "
                "models; put the checkpoint there or set asr.model to the path of a local .pt checkpoint")
        alignment_heads = whisper._ALIGNMENT_HEADS[name]
        model_id = f"openai-whisper:{name}@{url.split('/')[-2][:12]}"  # sha256 prefix from the URL
    else:
        raise ValueError(f"openai-whisper model {name!r} is neither a local checkpoint file nor one of "
                         f"{', '.join(whisper.available_models())}")

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {ckpt_path}: it holds more than tensors and plain data ({e})") from e
    try:
        dims = ModelDimensions(**checkpoint["dims"])
        model = Whisper(dims)
        model.load_state_dict(checkpoint["model_state_dict"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{ckpt_path} is not a Whisper checkpoint (needs 'dims' and 'model_state_dict'): {e!r}") from e
    if alignment_heads is not None:
        model.set_alignment_heads(alignment_heads)
    return model.to(device).eval(), model_id


class OpenAIWhisperAsr(_Whisper):
    """openai-whisper, one item at a time (it has no batched decoding)."""

    def __init__(self, cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0):
        import whisper.tokenizer

        from vidan.models.device import set_threads

        set_threads(cpu_threads)
        self.cfg = cfg
        self.device = device
        self._model, self.model_id = load_openai_whisper(cfg.model, device=device)
        self._supported = frozenset(whisper.tokenizer.LANGUAGES)
        self._check_languages()

    def _allowed(self) -> Optional[tuple[str, ...]]:
        return self.cfg.languages if self._model.is_multilingual else ("en",)

    def _detect(self, preps: dict[int, _Prepared]) -> dict[int, LanguageGuess]:
        import torch
        import whisper

        out: dict[int, LanguageGuess] = {}
        for i, p in preps.items():
            if not self._model.is_multilingual:
                out[i] = LanguageGuess("en", 1.0, [("en", 1.0)])
                continue
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(_first_speech(p)), self._model.dims.n_mels)
            with torch.no_grad():
                _, probs = self._model.detect_language(mel.to(self._model.device))
            g = self._guess(probs.items())
            if g is not None:
                out[i] = g
        return out

    def _decode(self, preps: dict[int, _Prepared], language: str, share: bool) -> dict[int, _Decoded]:
        import whisper

        out = {}
        for i, p in preps.items():
            # silence outside the speech pieces: Whisper hears only them, times stay the clip's
            audio = np.zeros_like(p.audio)
            for s, e in p.pieces:
                audio[s:e] = p.audio[s:e]
            result = whisper.transcribe(
                self._model,
                audio,
                verbose=None,
                temperature=0.0,  # a tuple of fallbacks retries whole windows: ~25x slower
                word_timestamps=True,
                condition_on_previous_text=False,
                fp16=self.device == "cuda",
                language=language,
                beam_size=self.cfg.beam_size if self.cfg.beam_size > 1 else None,
            )
            d = _Decoded()
            for s in result.get("segments", []):
                d.no_speech.append(float(s.get("no_speech_prob", 0.0)))
                n = len(s.get("tokens", [])) + 1
                d.logprob_sum += float(s.get("avg_logprob", 0.0)) * n
                d.logprob_n += n
                d.words.extend((w["start"], w["end"], w["word"], w.get("probability", 1.0))
                               for w in s.get("words", []) or [])
            out[i] = d
        return out
