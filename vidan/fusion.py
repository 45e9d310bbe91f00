"""Fusion maths: per-modality embeddings into one vector in the shared text space.

Pure numpy. The shared space is the sentence-embedding space (all-MiniLM-L6-v2): text
lands there directly; frames land there through the image classifier, as the
probability-weighted mean of the embeddings of their top class names (ConSE,
Norouzi et al., 2014), because no CLIP-like weights install offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

MODALITIES = ("visual", "text", "sounds")
# Weight of the sound events in the fused vector, beside the configured visual and text
# weights: enough that "music" finds a segment with music, too little to outvote its words.
SOUND_WEIGHT = 0.25


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def conse(probs: np.ndarray, label_embeddings: np.ndarray, top_t: int = 10) -> tuple[np.ndarray, float]:
    """Project class probabilities (C,) into the embedding space of ``label_embeddings`` (C, D).

    Returns the unit vector and a confidence in [0, 1]: the probability mass of the top
    classes times the length of their weighted mean before normalising. Agreeing labels
    (tabby, tiger cat, Egyptian cat) keep that length near 1; scattered guesses (football
    helmet, go-kart, bobsled) shrink it, so a confused classifier claims less.
    Only the ``top_t`` classes count: the long tail of small probabilities is noise
    that would pull every image towards the mean of all labels.
    """
    probs = np.asarray(probs, dtype=np.float32)
    top = np.argsort(probs)[::-1][:top_t]
    w = probs[top]
    if w.sum() <= 0:
        return np.zeros(label_embeddings.shape[1], np.float32), 0.0
    v = (w[:, None] * label_embeddings[top]).sum(axis=0) / w.sum()
    confidence = float(min(1.0, w.sum()) * np.linalg.norm(v))
    return l2_normalize(v), confidence


def describe(parts: Sequence[tuple[Optional[np.ndarray], float]]) -> Optional[np.ndarray]:
    """The weighted sum of unit vectors, normalised: one description from several readings
    (what the classifier saw, who the detectors found). None when nothing has weight."""
    acc = None
    for v, w in parts:
        if v is None or w <= 0 or not np.any(v):
            continue
        acc = w * l2_normalize(v) if acc is None else acc + w * l2_normalize(v)
    if acc is None or not np.any(acc):
        return None
    return l2_normalize(acc)


@dataclass(frozen=True)
class Fused:
    embedding: np.ndarray  # (D,) float32, L2-normalised; zeros when nothing was present
    weights: dict[str, float]  # the weights actually used, renormalised over present modalities
    present: dict[str, bool]


def fuse(embeddings: Mapping[str, Optional[np.ndarray]], weights: Mapping[str, float]) -> Fused:
    """Weighted mean of the L2-normalised embeddings that are present, renormalised.

    A missing modality (``None``) gets weight 0 and the others share its weight, so a
    silent segment is described by its pictures alone rather than pulled to zero.
    """
    present = {m: embeddings.get(m) is not None for m in MODALITIES}
    raw = {m: float(weights.get(m, 0.0)) if present[m] else 0.0 for m in MODALITIES}
    total = sum(raw.values())
    used = {m: (w / total if total > 0 else 0.0) for m, w in raw.items()}
    dim = next((len(e) for e in embeddings.values() if e is not None), 0)
    acc = np.zeros(dim, np.float32)
    for m in MODALITIES:
        if present[m] and used[m] > 0:
            acc += used[m] * l2_normalize(embeddings[m])
    return Fused(embedding=l2_normalize(acc), weights=used, present=present)
