"""Choosing the torch device and thread count for model workers."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def pick_device(prefer: str = "auto", library: str = "torch") -> str:
    """``"cuda"`` when asked for (or ``"auto"``) and ``library`` (the one that will run the
    model: ``"torch"`` or ``"ctranslate2"``) sees a CUDA device, else ``"cpu"``.

    Asking CTranslate2 for a Whisper worker spares it importing torch (1.5 s a worker),
    and it is the library whose CUDA build matters there.
    """
    if prefer not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {prefer!r}")
    if library not in ("torch", "ctranslate2"):
        raise ValueError(f"library must be torch or ctranslate2, not {library!r}")
    if prefer == "cpu":
        return "cpu"
    if library == "ctranslate2":
        import ctranslate2

        found = ctranslate2.get_cuda_device_count() > 0
    else:
        import torch

        found = torch.cuda.is_available()
    if found:
        return "cuda"
    if prefer == "cuda":
        log.warning("CUDA was requested but %s sees no CUDA device; using the CPU", library)
    return "cpu"


def set_threads(n: int) -> None:
    """Limit torch's intra-op threads (0 or less: leave torch's default)."""
    if n <= 0:
        return
    import torch

    torch.set_num_threads(n)
