"""Where stages run: the ``Executor`` protocol, and the in-process executor.

``LocalExecutor`` runs stages in this process (tests, debugging, ``--local``); the Ray
executor in ``workers/`` runs them on actor pools. The driver (``vidan.pipeline``) only
submits calls and collects results, so it does not care which.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

from vidan.config import Config
from vidan.records import VidanError
from vidan.stages import AUDIO, FINISH, STAGE_OF_KIND, VISUAL

log = logging.getLogger("vidan")


class Executor(Protocol):
    def start(self, config: Config) -> dict[str, str]:
        """Load the stages; return the model ids (asr, vision, text)."""

    def submit(self, kind: str, *args: Any) -> Any:
        """Queue one call of stage ``kind``; return a handle."""

    def wait(self, timeout: float) -> list[Any]:
        """Handles that finished (possibly none after ``timeout`` seconds)."""

    def result(self, handle: Any) -> Any:
        """The stage's return value, or raise ``VidanError`` naming what failed."""

    def shutdown(self) -> None: ...


class LocalExecutor:
    """Runs every stage in this process, one call at a time: finishing calls first, then
    parts in submission order."""

    def __init__(self, device: str = "auto"):
        self.device = device
        self._queue: deque = deque()
        self._done: dict[int, tuple[bool, Any]] = {}
        self._next = 0

    def start(self, config: Config) -> dict[str, str]:
        from vidan.stages import AudioStage, FinishStage, VisualStage

        self._stages = {VISUAL: VisualStage(config, self.device), AUDIO: AudioStage(config, self.device),
                        FINISH: FinishStage(config, self.device)}
        return {"vision": self._stages[VISUAL].model_id, "asr": self._stages[AUDIO].model_id,
                "text": self._stages[FINISH].model_id, "taxonomy": self._stages[FINISH].taxonomy.id}

    def submit(self, kind: str, *args: Any) -> int:
        h = self._next
        self._next += 1
        self._queue.append((h, kind, args))
        return h

    def wait(self, timeout: float) -> list[int]:
        if not self._queue:
            return []
        # finish a video before starting the next one's parts: results reach the report
        # (and memory is freed) as early as possible
        item = next((x for x in self._queue if x[1] == FINISH), None)
        if item is not None:
            self._queue.remove(item)
        else:
            item = self._queue.popleft()
        h, kind, args = item
        try:
            self._done[h] = (True, self._stages[kind](*args))
        except VidanError as e:
            self._done[h] = (False, e)
        except Exception as e:  # a bug or a model error must still become a row, with its cause
            log.debug("stage %s failed", kind, exc_info=True)
            self._done[h] = (False, VidanError(STAGE_OF_KIND[kind], f"{type(e).__name__}: {e}"))
        return [h]

    def result(self, handle: int) -> Any:
        ok, value = self._done.pop(handle)
        if not ok:
            raise value
        return value

    def shutdown(self) -> None:
        self._stages = {}
