"""Choosing the torch device and thread count for model workers."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def pick_device(prefer: str = "auto") -> str:
    """``"cuda"`` when asked for (or ``"auto"``) and available, else ``"cpu"``."""
    if prefer not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {prefer!r}")
    if prefer == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if prefer == "cuda":
        log.warning("CUDA was requested but torch sees no CUDA device; using the CPU")
    return "cpu"


def set_threads(n: int) -> None:
    """Limit torch's intra-op threads (0 or less: leave torch's default)."""
    if n <= 0:
        return
    import torch

    torch.set_num_threads(n)
