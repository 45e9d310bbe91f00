"""Thin Ray actors: load a stage's models in ``__init__``, delegate each call to vidan.

All logic lives in ``vidan.stages``; these classes only decide that a stage runs as a
long-lived actor (models load once per actor, not per item).
"""

from __future__ import annotations

import os

from vidan.config import Config


def _threads(n: int) -> None:
    if n > 0:
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
        import torch

        torch.set_num_threads(n)


class VisualActor:
    def __init__(self, config: Config, device: str, threads: int):
        _threads(threads)
        from vidan.stages import VisualStage

        self.stage = VisualStage(config, device)

    def model_id(self) -> str:
        return self.stage.model_id

    def __call__(self, job):
        return self.stage(job)


class AudioActor:
    def __init__(self, config: Config, device: str, threads: int):
        _threads(threads)
        from vidan.stages import AudioStage

        self.stage = AudioStage(config, device, cpu_threads=threads)

    def model_id(self) -> str:
        return self.stage.model_id

    def __call__(self, job):
        return self.stage(job)


class FinishActor:
    def __init__(self, config: Config, device: str, threads: int):
        _threads(threads)
        from vidan.stages import FinishStage

        self.stage = FinishStage(config, device)

    def model_ids(self) -> dict:
        return {"text": self.stage.model_id, "taxonomy": self.stage.taxonomy.id}

    def __call__(self, video_id, path, parts, provenance):
        return self.stage(video_id, path, parts, provenance)
