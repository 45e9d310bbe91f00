"""vidan's stages: what each one does (one module each) and how they chain (``registry``).

``run_chain`` runs one item through a chain in this process: for tests and scripts that
want one stage's output without an executor.
"""

from __future__ import annotations

from typing import Any, Optional

from vidan.config import Config
from vidan.stages.decode import scan_part
from vidan.stages.jobs import FinishJob, PartJob
from vidan.stages.registry import (AUDIO_CHAIN, CHAINS, FINISH_CHAIN, STAGES, VISUAL_CHAIN, StageSpec,
                                   call_stage, model_ids)

# the chain names the driver submits (kept under their old names)
VISUAL, AUDIO, FINISH = VISUAL_CHAIN, AUDIO_CHAIN, FINISH_CHAIN

__all__ = ["AUDIO", "CHAINS", "FINISH", "FinishJob", "PartJob", "STAGES", "StageSpec", "VISUAL", "call_stage",
           "load_stages", "model_ids", "run_chain", "scan_part"]


def load_stages(config: Config, names=None, device: str = "auto", threads: int = 0) -> dict[str, Any]:
    names = list(STAGES) if names is None else list(names)
    return {n: STAGES[n].load()(config, device=device, threads=threads) for n in names}


def run_chain(chain: str, item: Any, config: Config, *, device: str = "auto",
              stages: Optional[dict[str, Any]] = None) -> Any:
    """``item`` through every stage of ``chain``; the last result, or raise its VidanError."""
    stages = stages if stages is not None else load_stages(config, CHAINS[chain], device)
    value = item
    for name in CHAINS[chain]:
        (value,) = call_stage(stages[name], STAGES[name], [value])
    if isinstance(value, BaseException):
        raise value
    return value
