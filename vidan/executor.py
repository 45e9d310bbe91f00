"""Where stages run: the ``Executor`` protocol, and the in-process executor.

``LocalExecutor`` runs stages in this process (tests, debugging, ``--local``); the Ray
executor in ``workers/`` runs them on actor pools. Both are generic over the stage
registry (``vidan.stages.registry``): the driver submits an item to a chain, the item
goes through the chain's stages, and the last stage's result comes back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Protocol

from vidan.config import Config
from vidan.stages.registry import (CHAINS, STAGES, Join, call_stage, chain_result, item_seconds, model_ids,
                                   n_pieces, pieces_of, take_batch)

log = logging.getLogger("vidan")


class Executor(Protocol):
    def start(self, config: Config) -> dict[str, str]:
        """Load the stages; return their model ids."""

    def submit(self, chain: str, item: Any) -> Any:
        """Queue ``item`` for the stages of ``chain``; return a handle."""

    def wait(self, timeout: float) -> list[Any]:
        """Handles that finished (possibly none after ``timeout`` seconds)."""

    def result(self, handle: Any) -> Any:
        """The chain's last result, or raise ``VidanError`` naming the stage that failed."""

    def models_known(self) -> bool:
        """Every stage whose worker is up has named its models in the dict ``start``
        returned (one still waiting for a node, a GPU not up yet, is not waited for)."""

    def forget_scratch(self, inputs: list[tuple[str, str]]) -> None:
        """Remove the scratch copies of ``inputs`` ((path, etag)) that the stages made on
        other nodes (the driver removes its own node's)."""

    def shutdown(self) -> None: ...


class LocalExecutor:
    """Runs every stage in this process, one call at a time.

    Which call next: a video ready to finish first (its rows reach the report and its
    memory is freed early); then an encoder whose batch is full; then the oldest item
    waiting for a first stage; encoders with part-full batches only when nothing is left
    upstream. Batches mix parts of different videos, as on Ray.
    """

    def __init__(self, device: str = "auto"):
        self.device = device
        self._queues: dict[str, deque] = {name: deque() for name in STAGES}
        self._route: dict[int, tuple[str, int]] = {}  # handle -> (chain, step)
        self._done: dict[int, Any] = {}
        self._parent: dict[int, tuple[int, int]] = {}  # a piece's handle -> (its item's handle, index)
        self._joins: dict[int, Join] = {}  # an item cut into pieces -> its pieces' last results
        self._next = 0
        self.busy_s: dict[str, float] = {name: 0.0 for name in STAGES}
        self._ncalls: dict[str, int] = {name: 0 for name in STAGES}

    def start(self, config: Config) -> dict[str, str]:
        from vidan.stages import load_stages

        self._stages = load_stages(config, device=self.device)
        return model_ids(self._stages)

    def submit(self, chain: str, item: Any) -> int:
        h = self._next
        self._next += 1
        self._route[h] = (chain, 0)
        self._queues[CHAINS[chain][0]].append((h, item, item_seconds(item)))
        return h

    def _pick(self) -> str | None:
        queues = {n: q for n, q in self._queues.items() if q}
        if not queues:
            return None
        if "finish" in queues:
            return "finish"
        firsts = {c[0] for c in CHAINS.values()}
        for name in queues:  # a full batch is worth running now
            spec = STAGES[name]
            if name not in firsts and (len(queues[name]) >= spec.batch or
                                       (spec.batch_s and sum(x[2] for x in queues[name]) >= spec.batch_s)):
                return name
        upstream = [n for n in queues if n in firsts]
        if upstream:
            return min(upstream, key=lambda n: queues[n][0][0])  # the oldest item
        return next(iter(queues))

    def wait(self, timeout: float) -> list[int]:
        name = self._pick()
        if name is None:
            return []
        spec = STAGES[name]
        batch = take_batch(spec, self._queues[name])
        t0 = time.perf_counter()
        results = call_stage(self._stages[name], spec, [item for _, item, _ in batch])
        self.busy_s[name] += time.perf_counter() - t0
        self._ncalls[name] += 1
        done = []
        for (h, _, seconds), value in zip(batch, results):
            chain, step = self._route[h]
            stages = CHAINS[chain]
            if step + 1 < len(stages) and not isinstance(value, BaseException):
                pieces = pieces_of(self._stages[name], spec, value, n_pieces(spec, seconds))
                if len(pieces) > 1:
                    del self._route[h]
                    self._joins[h] = Join(spec, len(pieces))
                    for j, piece in enumerate(pieces):
                        c = self._next
                        self._next += 1
                        self._parent[c] = (h, j)
                        self._route[c] = (chain, step + 1)
                        self._queues[stages[step + 1]].append((c, piece, seconds / len(pieces)))
                    continue
                self._route[h] = (chain, step + 1)
                self._queues[stages[step + 1]].append((h, value, seconds))
            else:
                del self._route[h]
                done += self._settle(h, value)
        return done

    def _settle(self, h: int, value: Any) -> list[int]:
        """An item's chain is done: it is, or the last piece of its item is (joined)."""
        if h not in self._parent:
            self._done[h] = value
            return [h]
        parent, j = self._parent.pop(h)
        if not self._joins[parent].add(j, value):
            return []
        self._done[parent] = self._joins.pop(parent).result()
        return [parent]

    def result(self, handle: int) -> Any:
        return chain_result(self._done.pop(handle))

    def stats(self) -> dict[str, dict[str, float]]:
        return {n: {"actors": 1, "calls": self._ncalls[n], "busy_s": round(self.busy_s[n], 3)} for n in STAGES}

    def models_known(self) -> bool:
        return True  # ``start`` loaded every stage

    def forget_scratch(self, inputs: list[tuple[str, str]]) -> None:
        pass  # the stages ran on the driver's node, whose copies the driver removes

    def shutdown(self) -> None:
        self._stages = {}
