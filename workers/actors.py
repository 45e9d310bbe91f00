"""Thin Ray actors: load a stage's models in ``__init__``, delegate each call to vidan.

All logic lives in ``vidan.stages``; these classes only decide that a stage runs as a
long-lived actor (models load once per actor, not per item).
"""

from __future__ import annotations

import os

from vidan.config import Config


def worker_logging() -> None:
    """Ray gives a worker process no logging setup, so a vidan warning or error reached the
    worker's log file (and with --debug the console) as bare text that does not say it is
    an error. Give vidan's records the command line's format there."""
    import logging

    log = logging.getLogger("vidan")
    if not log.handlers:
        handler = logging.StreamHandler()  # stderr, which Ray writes to the worker's .err file
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)


def _threads(n: int) -> None:
    if n > 0:
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
        import torch

        torch.set_num_threads(n)


class VisualActor:
    def __init__(self, config: Config, device: str, threads: int):
        worker_logging()
        _threads(threads)
        from vidan.stages import VisualStage

        self.stage = VisualStage(config, device)

    def model_id(self) -> str:
        return self.stage.model_id

    def __call__(self, job):
        return self.stage(job)


class AudioActor:
    def __init__(self, config: Config, device: str, threads: int):
        worker_logging()
        _threads(threads)
        from vidan.stages import AudioStage

        self.stage = AudioStage(config, device, cpu_threads=threads)

    def model_id(self) -> str:
        return self.stage.model_id

    def __call__(self, job):
        return self.stage(job)


class FinishActor:
    def __init__(self, config: Config, device: str, threads: int):
        worker_logging()
        _threads(threads)
        from vidan.stages import FinishStage

        self.stage = FinishStage(config, device)

    def model_ids(self) -> dict:
        return {"text": self.stage.model_id, "taxonomy": self.stage.taxonomy.id}

    def __call__(self, video_id, path, parts, provenance):
        return self.stage(video_id, path, parts, provenance)
