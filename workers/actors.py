"""One thin Ray actor that hosts any registered stage.

All logic lives in ``vidan.stages``; this class only decides that a stage runs as a
long-lived actor (models load once per actor, not per item) and fetches the results of
the previous stage straight from the object store, so they never pass through the
driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

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
    """Native thread pools of this worker: set before any of them starts. torch is not
    imported for it (1.5 s and 300 MB in a decoder that never uses it); a stage that
    uses torch sets its own count from ``threads``."""
    if n > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(n)
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)


@dataclass(frozen=True)
class Upstream:
    """An item still in the object store: the result of stage ``stage`` for one item.
    Wrapped so Ray hands the actor the reference rather than resolving it first: the
    actor fetches it itself and turns a failure there into that item's error."""

    stage: str
    ref: Any


@dataclass(frozen=True)
class Lost:
    """An item whose previous stage's result was lost with its node, or whose previous
    stage's actor could not be reached (``unreachable``: why): the driver sends the item
    through its chain again."""

    stage: str
    unreachable: str = ""


def fetch(x: Any) -> Any:
    if not isinstance(x, Upstream):
        return x
    import ray
    from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

    from vidan.records import VidanError
    from vidan.stages.registry import STAGES

    stage = STAGES[x.stage].report_stage
    try:
        return ray.get(x.ref)
    except ObjectLostError:  # the node that held it is gone (results of actor calls are not rebuilt)
        return Lost(x.stage)
    except ActorUnavailableError as e:
        # Ray's retries all found the actor unreachable (a killed worker whose restart was
        # not yet seen): not a verdict on the file, so the driver may try it once more
        return Lost(x.stage, unreachable=str(e).splitlines()[0] or type(e).__name__)
    except RayTaskError as e:
        cause = e.cause if getattr(e, "cause", None) is not None else e
        return cause if isinstance(cause, VidanError) else VidanError(stage, f"{type(cause).__name__}: {cause}")
    except (RayActorError, WorkerCrashedError) as e:
        return VidanError(stage, f"worker process died: {str(e).splitlines()[0]}")


def forget_here(inputs: list[tuple[str, str]]) -> None:
    """This node's scratch copies of ``inputs`` ((path, etag)) removed: a task the driver
    runs on every node its stages ran on, in the environment (``VIDAN_SCRATCH``) the
    stages had there."""
    from vidan.sources import forget

    for path, etag in inputs:
        forget(path, etag)


class StageActor:
    def __init__(self, name: str, config: Config, device: str, threads: int):
        self._name = f"vidan:{name}:{device}"  # first: Ray asks __repr__ even when loading fails
        worker_logging()
        _threads(threads)
        from vidan.stages.registry import STAGES

        self.spec = STAGES[name]
        self.stage = self.spec.load()(config, device=device, threads=threads)

    def __repr__(self) -> str:
        # Ray shows this as the actor's name: its log lines' prefix, the dashboard and
        # `ray list actors --detail` (repr_name) tell the stage, not only "StageActor"
        return getattr(self, "_name", "vidan:stage")

    def model_ids(self) -> dict:
        return self.stage.model_ids()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def process(self, inputs: list, pieces: Optional[list[int]] = None) -> Any:
        """One result per input, in order; with ``pieces`` (a stage that cuts its results,
        ``split_s``), ``pieces[i]`` results for input i, so every piece has its own
        reference and goes to whichever actor of the next stage is free."""
        from vidan.stages.registry import call_stage, pieces_of

        items = [fetch(x) for x in inputs]
        live = [i for i, x in enumerate(items) if not isinstance(x, Lost)]
        out = list(items)
        for i, r in zip(live, call_stage(self.stage, self.spec, [items[i] for i in live])):
            out[i] = r
        if pieces is not None:
            # a lost input stands for each of its pieces: the driver sends the item again
            out = [p for r, k in zip(out, pieces)
                   for p in ([r] * k if isinstance(r, Lost) else pieces_of(self.stage, self.spec, r, k))]
        return out[0] if len(out) == 1 else tuple(out)
