"""Choosing the torch device and thread count for model workers, and the ONNX Runtime
CPU sessions they run."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Union

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
    driver = _gpu_driver_present()
    if not driver:
        found = False
    elif library == "ctranslate2":
        import ctranslate2

        found = ctranslate2.get_cuda_device_count() > 0
    else:
        import torch

        found = torch.cuda.is_available()
    if found:
        return "cuda"
    if prefer == "cuda":
        log.warning("CUDA was requested but %s; using the CPU",
                    f"{library} sees no CUDA device" if driver else "this machine has no GPU driver")
    return "cpu"


def _gpu_driver_present() -> bool:
    """False only when this machine cannot have a CUDA device: macOS, or Linux without any
    GPU driver's device files. Saves a CPU-only worker importing torch (3 s on a slow
    core) to be told what the missing driver already says."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in _GPU_DRIVER_FILES)
    return True


# NVIDIA's driver, WSL2's GPU bridge, Jetson's integrated GPU, and ROCm (which torch.cuda
# also serves)
_GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/nvhost-ctrl", "/dev/nvmap",
                     "/dev/kfd")


def set_threads(n: int) -> None:
    """Limit torch's intra-op threads (0 or less: leave torch's default)."""
    if n <= 0:
        return
    import torch

    torch.set_num_threads(n)


def onnx_cpu_session(model: Union[str, Path, bytes], threads: int):
    """An ONNX Runtime session on the CPU for ``model`` (a file, or the serialized model),
    with ``threads`` intra-op threads (0: ONNX Runtime's default, every core). A worker
    actor has one core: the default would take them all."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: its notes on graph rewrites are noise in worker logs
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])
