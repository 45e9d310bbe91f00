"""Sentence embeddings of the image classifier's class names (the ConSE label bank).

Embedding 1,000 names takes seconds on a CPU, so the bank is cached on disk keyed by
the text model and the exact label list.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def label_bank(text_encoder, labels: Sequence[str]) -> np.ndarray:
    """(C, D) unit embeddings of ``labels``, cached under the model cache folder."""
    from vidan.models.cache import load_array, save_array

    key = hashlib.sha256(("\n".join(labels) + "\0" + text_encoder.model_id).encode()).hexdigest()[:16]
    name = f"label-bank-{key}.npy"
    bank = load_array(name, len(labels), text_encoder.dim)
    if bank is None:
        bank = text_encoder.encode(list(labels)).astype(np.float32)
        save_array(name, bank)
    return bank
