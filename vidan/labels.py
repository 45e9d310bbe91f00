"""Sentence embeddings of the image classifier's class names (the ConSE label bank).

Embedding 1,000 names takes seconds on a CPU, so the bank is cached on disk keyed by
the text model and the exact label list.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np


def label_bank(text_encoder, labels: Sequence[str]) -> np.ndarray:
    """(C, D) unit embeddings of ``labels``, cached under the model cache folder."""
    from vidan.models.cache import cache_dir

    key = hashlib.sha256(("\n".join(labels) + "\0" + text_encoder.model_id).encode()).hexdigest()[:16]
    path = cache_dir() / f"label-bank-{key}.npy"
    if path.exists():
        bank = np.load(path, allow_pickle=False)
        if bank.shape == (len(labels), text_encoder.dim):
            return bank
    bank = text_encoder.encode(list(labels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, bank, allow_pickle=False)
    os.replace(tmp, path)
    return bank
