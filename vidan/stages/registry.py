"""What each stage is: what it takes and gives, what it needs, how it is batched.

The driver, both executors and the pool planner are generic over ``STAGES`` and
``CHAINS``: adding a stage is one module in ``vidan/stages/`` and one entry here.

A stage is a class built as ``cls(config, device=..., threads=...)`` that loads its
models once, answers ``model_ids()``, and runs ``process(items) -> results``: one
result per item, in order, each a value or a ``VidanError`` for that item alone.
``call_stage`` is the one place that turns whatever else goes wrong into such errors.

A stage with ``split_s`` also has ``split(result, k)``: its result for one item goes
on through the chain as ``k`` pieces (``n_pieces``, counted from the item's seconds by
the driver, which must know how many results a call gives), and the spec's ``join``
puts the pieces' last results back together (``Join``). Both executors do this.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from vidan.records import STAGE_ASR, STAGE_AUDIO, STAGE_DECODE, STAGE_FUSE, STAGE_VISION, VidanError

log = logging.getLogger("vidan")

# Pools are sized by: "cores" (as many actors as free cores allow, split by measured
# demand), "gpu" (one actor per GPU when the cluster has GPUs, else like "cores"),
# "one" (a single small actor).
CORES, GPU, ONE = "cores", "gpu", "one"


@dataclass(frozen=True)
class StageSpec:
    name: str
    factory: str  # "module:Class", imported where the stage runs
    report_stage: str  # the report's error_stage when a call fails without saying more
    takes: str
    gives: str
    scale: str = CORES
    cpus: float = 1.0  # cores one actor keeps busy
    gpus: float = 0.0  # share of one GPU an actor asks for, on a cluster with GPUs
    memory_mb: int = 0  # heap one actor needs beyond its models (0: no reservation)
    batch: int = 1  # items per call: encoders take parts of many videos at once
    batch_s: float = 0.0  # ...and at most this many seconds of media a call (0: no limit)
    # ...or this many on a CPU actor (0: as batch_s): a CPU gains little from a big batch,
    # and smaller calls let videos finish one by one and an actor started mid-run share
    # the work left (one call of a whole folder's speech kept the second core idle)
    cpu_batch_s: float = 0.0
    inflight: int = 1  # calls queued at one actor, so the next batch is there when one ends
    # while earlier stages are still producing, a part-full batch waits this long for more
    # items before it goes to an idle actor: fuller batches, at a bounded delay
    batch_wait_s: float = 0.0
    # core-seconds a second of media costs it, until measured (the defaults: 360p video
    # with speech on a 2-core machine, all stages at once)
    weight: float = 0.1
    # Fan-out: the rest of the chain takes this stage's result for one item in pieces of
    # about this many seconds of media (0: whole), so a long part's slow next stage runs
    # on several workers at once. The stage class cuts (``split(result, k)``, exactly k
    # pieces) where the data is; ``join`` ("module:function") puts the chain's last
    # results for the pieces back into the one result the driver gets.
    split_s: float = 0.0
    join: str = ""

    def load(self):
        return _named(self.factory)

    def load_join(self):
        return _named(self.join)


def _named(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


DECODE = StageSpec("decode", "vidan.stages.decode:DecodeStage", STAGE_DECODE, "PartJob", "DecodedPart",
                   cpus=1.0, memory_mb=1024, inflight=2, weight=0.08)
VISION = StageSpec("vision", "vidan.stages.vision:VisionStage", STAGE_VISION, "DecodedPart", "FramePart",
                   scale=GPU, cpus=1.0, gpus=0.25, batch=16, batch_s=300.0, inflight=2, batch_wait_s=2.0,
                   weight=0.02)
# A long part's speech goes to recognition in runs of whole 30-s windows (one a piece on
# a CPU worker): a talk is shared by every speech worker the pool has, not held by one
# to the end, and a worker started late in a run still finds work.
AUDIO = StageSpec("audio", "vidan.stages.audio:AudioStage", STAGE_AUDIO, "PartJob", "HeardPart",
                  cpus=1.0, memory_mb=512, inflight=2, weight=0.01, split_s=30.0,
                  join="vidan.stages.asr:join_pieces")
ASR = StageSpec("asr", "vidan.stages.asr:AsrStage", STAGE_ASR, "HeardPart", "AudioPart",
                scale=GPU, cpus=1.0, gpus=0.5, batch=8, batch_s=300.0, cpu_batch_s=30.0, inflight=2,
                batch_wait_s=2.0, weight=0.12)
FINISH = StageSpec("finish", "vidan.stages.finish:FinishStage", STAGE_FUSE, "FinishJob", "rows",
                   scale=ONE, cpus=0.0, inflight=2)

STAGES: dict[str, StageSpec] = {s.name: s for s in (DECODE, VISION, AUDIO, ASR, FINISH)}

# What the driver submits: each chain's item goes through its stages in order, and only
# the last stage's result comes back to the driver.
VISUAL_CHAIN, AUDIO_CHAIN, FINISH_CHAIN = "visual", "audio", "finish"
CHAINS: dict[str, tuple[str, ...]] = {
    VISUAL_CHAIN: ("decode", "vision"),
    AUDIO_CHAIN: ("audio", "asr"),
    FINISH_CHAIN: ("finish",),
}


def item_seconds(item: Any) -> float:
    """Seconds of media an item carries (what a batch is bounded by)."""
    span = getattr(item, "span", None)
    return span.duration_s if span is not None else 0.0


def n_pieces(spec: StageSpec, seconds: float) -> int:
    """Pieces ``spec``'s result for an item of ``seconds`` of media is cut into. The
    driver and the worker both count them from the item alone: the driver must know
    how many results a call gives before it is sent."""
    if not spec.split_s or not seconds > 0:
        return 1
    return max(1, int(seconds / spec.split_s + 0.5))


def pieces_of(stage: Any, spec: StageSpec, result: Any, k: int) -> list:
    """``result`` (of ``stage``) as the ``k`` pieces the rest of its chain takes; an
    error, or a split that fails, stands for every piece."""
    if k == 1:
        return [result]
    if isinstance(result, BaseException):
        return [result] * k
    try:
        out = list(stage.split(result, k))
        if len(out) != k:
            raise RuntimeError(f"{spec.name} cut a result into {len(out)} pieces, not {k}")
    except Exception as e:
        log.debug("stage %s could not split a result", spec.name, exc_info=True)
        return [failure(spec, e)] * k
    return out


class Join:
    """The pieces of one item on their way: the last results come in any order."""

    def __init__(self, spec: StageSpec, k: int, seconds: float = 0.0):
        self.spec = spec  # the stage that cut it (whose ``join`` puts it together)
        self.got: list[Any] = [None] * k
        self.left = k
        self.seconds = seconds
        self.pieces: list[int] = []  # the pieces' handles (an executor's own)

    def add(self, j: int, value: Any) -> bool:
        """Piece ``j``'s last result; True once every piece is in."""
        self.got[j] = value
        self.left -= 1
        return self.left == 0

    def result(self) -> Any:
        return self.spec.load_join()(self.got)


def batch_seconds(spec: StageSpec, device: str) -> float:
    """Seconds of media one call of ``spec`` may carry on ``device`` (0: no limit)."""
    return spec.cpu_batch_s if device == "cpu" and spec.cpu_batch_s else spec.batch_s


def take_batch(spec: StageSpec, queue, limit_s: float | None = None) -> list:
    """Pop the next batch off ``queue`` (a deque of (handle, item, seconds)): up to
    ``spec.batch`` items and ``limit_s`` (default ``spec.batch_s``) seconds of media, at
    least one item."""
    limit_s = spec.batch_s if limit_s is None else limit_s
    out, total = [], 0.0
    while queue and len(out) < spec.batch:
        s = queue[0][2]
        if out and limit_s and total + s > limit_s:
            break
        out.append(queue.popleft())
        total += s
    return out


def model_ids(stages: dict[str, Any]) -> dict[str, str]:
    """Every loaded stage's model ids, for each report row's provenance."""
    out: dict[str, str] = {}
    for name in STAGES:
        if name in stages:
            out.update(stages[name].model_ids())
    return out


def failure(spec: StageSpec, e: BaseException) -> VidanError:
    if isinstance(e, VidanError):
        return e
    return VidanError(spec.report_stage, f"{type(e).__name__}: {e}")


def chain_result(value: Any) -> Any:
    """What an executor's ``result`` gives for a chain's last value: the value, or its
    error raised (an unexpected exception as the report's ``fuse`` stage)."""
    if isinstance(value, VidanError):
        raise value
    if isinstance(value, BaseException):
        raise VidanError(STAGE_FUSE, f"{type(value).__name__}: {value}")
    return value


def call_stage(stage: Any, spec: StageSpec, items: Sequence[Any]) -> list[Any]:
    """Run one call of a stage over ``items``. An item that is already an error (its
    previous stage failed) passes through untouched. When a batched call fails as a
    whole, its items are run one by one, so one bad item fails alone."""
    out: list[Any] = list(items)
    live = [i for i, x in enumerate(items) if not isinstance(x, BaseException)]
    if not live:
        return out
    try:
        results = stage.process([items[i] for i in live])
        if len(results) != len(live):
            raise RuntimeError(f"{spec.name} gave {len(results)} results for {len(live)} items")
    except Exception as e:
        if len(live) == 1:
            log.debug("stage %s failed", spec.name, exc_info=True)
            results = [failure(spec, e)]
        else:
            results = [call_stage(stage, spec, [items[i]])[0] for i in live]
    for i, r in zip(live, results):
        out[i] = failure(spec, r) if isinstance(r, BaseException) else r
    return out
