"""Run vidan's stages on Ray actor pools: an embedded local Ray, or a cluster.

One pool per registered stage (``vidan.stages.registry``), sized and placed by
``vidan.pools.plan`` from the nodes alive and the work each stage has left, and
re-planned while the run goes: a node that joins gets actors, cores move to the stage
that is behind, encoders ask for GPUs the autoscaler has not started yet.

Items move between stages as object references: the driver hands a decoder's result
to an encoder without fetching it. A stage that cuts its results into pieces
(``split_s``: a long part's speech) gives each piece its own reference; the pieces go
through the rest of the chain as items of their own, and their last results are joined
here into the one result the driver gets. Each stage has a bounded queue here; an actor gets
at most ``spec.inflight`` calls at once on a GPU (two for encoders: the next batch is
waiting when one ends) and one on a CPU, and encoder calls carry parts of many videos.
A crashed actor is restarted by Ray (``max_restarts``) and the call retried a bounded number of times
(``MAX_TASK_RETRIES``); a batched call that keeps dying is split so one file fails alone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from vidan.cluster import cluster_address
from vidan.config import Config
from vidan.records import VidanError
from vidan.pools import Node, Slot, diff, plan
from vidan.stages.registry import (CHAINS, STAGES, Join, batch_seconds, chain_result, item_seconds,
                                    n_pieces, take_batch)
from workers.actors import Lost
from workers.connect import first_line, init_ray, prepare_connection, stop_ray

log = logging.getLogger("vidan")


# A call whose actor died is tried again on the restarted actor, a bounded number of
# times: calls that merely arrived while the actor was restarting go through, and a
# file that kills its worker every time fails after that many tries instead of looping.
MAX_TASK_RETRIES = 2
UNREACHABLE_COOL_S = 10.0
_SPLIT = object()
_UNAVAILABLE = object()


@dataclass
class _Actor:
    handle: Any
    slot: Slot
    inflight: int = 0
    calls: int = 0
    node_ref: Any = None  # where Ray placed it, asked once when it starts
    started: float = field(default_factory=time.monotonic)
    last_done: float = field(default_factory=time.monotonic)
    ended: Optional[float] = None
    cool_until: float = 0.0  # unreachable lately: no calls before then
    up: bool = False  # Ray has started it (its node id came back)
    node: Optional[str] = None  # the node it first came up on
    reported: bool = False  # reported as not up after workers.place_warn_s


def _inflight(spec, a: _Actor) -> int:
    """Calls an actor may hold. A GPU must never wait for its next batch; a CPU actor
    gains nothing from a queued call (a call takes seconds, the hand-off milliseconds),
    a call queued there is work a newly started actor of the stage cannot take, and it
    dies with the actor when the call ahead of it kills the worker."""
    return spec.inflight if a.slot.device == "cuda" else 1


@dataclass
class _Call:
    stage: str
    actor: _Actor
    batch: list  # (handle, input, media seconds)
    refs: list
    t0: float
    deadline: float
    error: str = ""  # why its actor died, when it did


def _amount(resource: str, value: float) -> str:
    return f"{value / 2 ** 30:.1f} GiB" if resource == "memory" else f"{value:g}"


def _asks(slot: Slot) -> dict[str, float]:
    """What one actor of ``slot`` asks Ray for, by Ray's resource names (memory in bytes)."""
    return {"CPU": slot.num_cpus, "GPU": slot.num_gpus, "memory": STAGES[slot.stage].memory_mb * 2 ** 20}


def _fits(slot: Slot, free: dict) -> bool:
    return all(free.get(k, 0.0) >= v for k, v in _asks(slot).items())


def _group(items, key) -> dict:
    out: dict = {}
    for x in items:
        out.setdefault(key(x), []).append(x)
    return out


def _actor_row(handle) -> Optional[dict]:
    """The actor's row in the GCS's actor table; None when it cannot be read."""
    try:
        from ray._private.state import state  # no public call tells this without a dashboard

        return state.actor_table(handle._actor_id.hex())
    except Exception:
        return None


def _has_process(row: dict) -> bool:
    return bool(int(row.get("Pid") or 0))


def _unplaced(handle) -> bool:
    """Ray holds the actor without a process: never placed yet, or restarting (its worker
    or its node died). One still loading its models has a process, and is not."""
    row = _actor_row(handle)
    if row is None:
        return False
    return row.get("State") == "RESTARTING" or (row.get("State") == "PENDING_CREATION" and not _has_process(row))


def _where(handle) -> str:
    """"loading" when Ray gave a not yet ready actor a process, "unplaced" when it has none
    yet, "unknown" when the GCS's actor table cannot be read."""
    row = _actor_row(handle)
    if row is None:
        return "unknown"
    return "loading" if _has_process(row) else "unplaced"


def _label(slot: Slot) -> str:
    """How events name an actor's slot: its stage at the start of its node's id."""
    return f"{slot.stage}@{(slot.node_id or 'any')[:8]}"


def _nodes() -> list[Node]:
    import ray

    return [Node(n["NodeID"], float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


class RayExecutor:
    shutdown_wait_s = 10.0  # for killed actors to be reported dead
    forget_wait_s = 30.0  # for every node to remove its scratch copies at the end of a run

    def __init__(self, address: Optional[str] = None, *, num_cpus: Optional[int] = None, device: str = "auto",
                 temp_dir: Optional[str] = None, quiet: bool = True, call_timeout_s: Optional[float] = None):
        # a cluster that cannot be reached is found before the report folder is touched
        self.address = cluster_address(address)
        if self.address:
            prepare_connection(self.address)
        # A call still running after this long is stuck (decoders have their own, shorter
        # limit in the isolated child; this catches a hang anywhere else): it is cancelled,
        # not retried, and its actor is replaced by a fresh one.
        self.call_timeout_s = call_timeout_s
        self.num_cpus = num_cpus
        self.device = device
        self.temp_dir = temp_dir
        self.quiet = quiet
        self._started_ray = False
        self._queues: dict[str, deque] = {n: deque() for n in STAGES}
        self._actors: dict[str, list[_Actor]] = {n: [] for n in STAGES}
        self._gone: list[_Actor] = []  # retired or replaced, for the pool statistics
        self._calls: dict[Any, _Call] = {}  # first result ref of a call -> the call
        self._route: dict[int, tuple[str, int]] = {}  # handle -> (chain, step)
        self._seconds: dict[int, float] = {}
        self._alone: set[int] = set()  # handles to send alone (their batch killed its worker)
        self._queued_at: dict[int, float] = {}  # when each item joined its current queue
        self._items: dict[int, Any] = {}  # each handle's original item
        self._redone: dict[int, int] = {}  # how often an item was sent again after a lost node
        self._unavailable: dict[int, int] = {}  # how often an item's actor could not be reached
        self._made_by: dict[int, _Actor] = {}  # the actor whose result an item carries to its next stage
        self._parent: dict[int, tuple[int, int]] = {}  # a piece's handle -> (its item's handle, index)
        self._joins: dict[int, Join] = {}  # an item cut into pieces -> its pieces' last results
        self._done: dict[int, Any] = {}
        self._next = 0
        self._model_ids: dict[str, str] = {}
        self._busy = {n: 0.0 for n in STAGES}
        self._media = {n: 0.0 for n in STAGES}
        self._ncalls = {n: 0 for n in STAGES}
        self._filled = {n: 0 for n in STAGES}  # items sent, to tell how full batches were
        self._next_plan = 0.0
        self._gpu_wait_until = 0.0
        self._asked_gpus = False
        self._seen_ids: set[str] = set()
        self._pending_ids: dict[str, tuple[_Actor, Any]] = {}  # stage -> (actor asked, its ids' ref)
        self.events: list[tuple[float, str]] = []  # what the planner did, for tests and --debug

    # --- start and plan -------------------------------------------------------------

    def start(self, config: Config) -> dict[str, str]:
        self._config = config
        if self.call_timeout_s is None:
            self.call_timeout_s = 2 * config.limits.file_timeout_s + 60
        self._started_ray = init_ray(self.address, num_cpus=self.num_cpus, temp_dir=self.temp_dir, quiet=self.quiet)
        self._t0 = time.monotonic()
        if self.device != "cpu" and not any(n.gpus >= 1 for n in _nodes()):
            if self.address:  # a cluster's autoscaler starts GPU nodes only when asked
                self._ask_for_gpus(config.workers.gpus)
            if config.workers.gpu_wait_s > 0:
                self._gpu_wait_until = time.monotonic() + config.workers.gpu_wait_s
                log.info("no GPU in the cluster yet: encoders wait up to %g s for one", config.workers.gpu_wait_s)
        self._replan(first=True)
        # ``start`` returns this dict; stages whose actors start later fill it in place
        return self._model_ids

    def _event(self, what: str) -> None:
        """Note what the planner or the fault handling did (for tests, and logged for --debug)."""
        self.events.append((time.monotonic(), what))
        log.debug("%s", what)

    def _ask_for_gpus(self, n: int) -> None:
        if n <= 0:
            return
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[{"GPU": 1}] * n)
            self._asked_gpus = True
            self._event(f"asked the autoscaler for {n} GPU(s)")
        except Exception as e:  # a cluster without an autoscaler: nothing to ask
            log.debug("could not request GPUs: %s", e)

    def _demand(self) -> dict[str, float]:
        """Seconds of work each stage has left: media seconds still to pass through it
        times what a media second has cost it so far (its spec's guess until measured)."""
        left = {n: 0.0 for n in STAGES}
        for h, (chain, step) in self._route.items():
            for name in CHAINS[chain][step:]:
                # an item of no known length still needs its stage: count it as a second
                left[name] += max(1.0, self._seconds.get(h, 0.0))
        out = {name: left[name] * self._cost(name) for name in STAGES}
        out["finish"] = 1.0  # one small actor for the whole run
        return out

    def _replan(self, first: bool = False) -> None:
        now = time.monotonic()
        if not first and now < self._next_plan:
            return
        self._next_plan = now + self._config.workers.replan_s
        nodes = _nodes()
        if not first:
            self._drop_lost({n.node_id for n in nodes}, now)
        has_gpu = any(n.gpus >= 1 for n in nodes)
        waiting = now < self._gpu_wait_until and not has_gpu
        demand = None if first else self._demand()
        want = plan(nodes, device=self.device, demand=demand, gpu_stages_wait=waiting)
        have: dict[tuple, int] = {}
        for acts in self._actors.values():
            for a in acts:
                have[a.slot.key] = have.get(a.slot.key, 0) + 1
        start, retire = diff(want, have)
        if not first:
            start = [s for s in start if self._worth_starting(s, demand)]
        self._retire(retire, now)
        if start:
            self._start(start)

    def _drop_lost(self, live: set[str], now: float) -> None:
        """End the actors whose node is gone, their calls back in the queues. Ray would
        restart them elsewhere, but the plan sized every pool for the nodes there were: on
        the nodes left, their cores are held by the other pools, and a call queued at such
        an actor would wait, unplaced, for the whole call timeout. Ended, they leave the
        plan free to start what the nodes left can hold."""
        for acts in self._actors.values():
            for a in list(acts):
                where = a.node or a.slot.node_id
                if where and where not in live:
                    self._end(a, now, "node gone: ended")

    def _worth_starting(self, slot: Slot, demand: dict[str, float]) -> bool:
        n = len(self._actors[slot.stage])
        if n == 0:
            return demand.get(slot.stage, 0.0) > 0 or bool(self._queues[slot.stage])
        # A new actor only shares the work not yet sent: the calls in flight stay where
        # they are. At a run's tail the part still decoding is most of a stage's demand,
        # and an actor started for it would spend seconds loading and find nothing to do.
        left = demand.get(slot.stage, 0.0) - self._in_flight(slot.stage)
        return left / (n + 1) >= self._config.workers.grow_min_s

    def _in_flight(self, stage: str) -> float:
        """Seconds of work ``stage``'s actors hold now (media seconds at its measured cost)."""
        held = sum(max(1.0, secs) for c in self._calls.values() if c.stage == stage for _, _, secs in c.batch)
        return held * self._cost(stage)

    def _cost(self, stage: str) -> float:
        """Seconds a media second has cost ``stage`` so far (its spec's guess until measured)."""
        media = self._media[stage]
        return self._busy[stage] / media if media > 0 else STAGES[stage].weight

    def _start(self, slots: list[Slot]) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from workers.actors import StageActor

        cls = ray.remote(StageActor)
        new: list[_Actor] = []
        for s in slots:
            need = _asks(s)
            opts: dict[str, Any] = dict(num_cpus=need["CPU"], num_gpus=need["GPU"], max_restarts=-1,
                                        max_task_retries=MAX_TASK_RETRIES)
            if need["memory"]:
                opts["memory"] = need["memory"]
            if s.node_id:
                # Soft, and spilling when the node is full: the plan's node is a preference.
                # A warm actor of another pool may still hold the cores the plan counted
                # free there, and a restart (a killed worker) may find its cores taken; a
                # plain soft affinity would wait on that node, unplaced, for good.
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(s.node_id, soft=True,
                                                                             _spill_on_unavailable=True)
            a = _Actor(cls.options(**opts).remote(s.stage, self._config, s.device, s.threads), s)
            a.node_ref = a.handle.node_id.remote()
            self._actors[s.stage].append(a)
            new.append(a)
        self._event("started " + ", ".join(
            f"{_label(s)}/{s.device}" for s in slots))
        # Actors load their models in parallel, and calls queue at an actor until it has:
        # the driver waits neither for the slowest model before decoding starts nor for a
        # GPU actor that no node can place yet. Ids are read once per stage, for
        # provenance, as they come (``_take_ids``).
        for stage, a in {a.slot.stage: a for a in new if a.slot.stage not in self._seen_ids}.items():
            self._ask_ids(stage, a)
        for name in {a.slot.stage for a in new}:
            self._dispatch(name)

    def _retire(self, retire: dict[tuple, int], now: float) -> None:
        """End the actors the plan no longer wants: first those Ray cannot run now (a
        restart waiting for cores other pools hold, after a node was lost), their calls
        back in the queue, then idle ones. A running actor that holds calls is kept."""
        keep_s = self._config.workers.gpu_keep_s
        for key, n in retire.items():
            stage = key[0]
            mine = [(not _unplaced(a.handle), a) for a in self._actors[stage] if a.slot.key == key]
            for placed, a in sorted(mine, key=lambda x: (x[0], x[1].inflight > 0)):
                if n <= 0:
                    break
                if placed and a.inflight:
                    continue
                if placed and a.slot.device == "cuda" and now - a.last_done < keep_s:
                    continue  # a warm GPU pool outlives a lull: reloading its models costs minutes
                if self._queues[stage] and len(self._actors[stage]) == 1:
                    continue
                self._end(a, now, "retired")
                n -= 1

    def _end(self, a: _Actor, now: float, what: str) -> None:
        """Kill ``a`` for good, the calls it still holds back in their queues; it is kept
        for the pool statistics."""
        import ray

        self._take_back(a)
        self._actors[a.slot.stage].remove(a)
        a.ended = now
        self._gone.append(a)
        ray.kill(a.handle)
        self._event(f"{what} {_label(a.slot)}")

    # --- moving items -----------------------------------------------------------------

    def submit(self, chain: str, item: Any) -> int:
        h = self._next
        self._next += 1
        first = CHAINS[chain][0]
        self._route[h] = (chain, 0)
        self._seconds[h] = item_seconds(item)
        self._items[h] = item  # kept (small: a job) to send again if a lost node took its results
        self._queues[first].append((h, item, self._seconds[h]))
        self._dispatch(first)
        return h

    def _backlog_full(self, stage: str) -> bool:
        """Backpressure: a first stage stops feeding an encoder whose queue holds more
        than two full batches per actor, so decoded frames never pile up in memory."""
        for chain in CHAINS.values():
            if chain[0] == stage and len(chain) > 1:
                nxt = STAGES[chain[1]]
                bound = max(4, 2 * nxt.batch * max(1, len(self._actors[nxt.name])))
                queued = len(self._queues[nxt.name]) + sum(
                    len(c.batch) for c in self._calls.values() if c.stage == nxt.name)
                return queued >= bound
        return False

    def _dispatch(self, stage: str) -> None:
        spec = STAGES[stage]
        q = self._queues[stage]
        now = time.monotonic()
        while q:
            ready = [a for a in self._actors[stage] if a.inflight < _inflight(spec, a) and a.cool_until <= now]
            if not ready or self._backlog_full(stage):
                return
            a = min(ready, key=lambda a: a.inflight)
            if q[0][0] in self._alone:
                batch = [q.popleft()]
            else:
                limit_s = batch_seconds(spec, a.slot.device)
                full = len(q) >= spec.batch or (limit_s and sum(x[2] for x in q) >= limit_s)
                if not full and spec.batch > 1:
                    if a.inflight:
                        return  # wait for a fuller batch while this actor is busy anyway
                    waited = time.monotonic() - self._queued_at.get(q[0][0], 0.0)
                    # more items are on their way: let a GPU's batch fill a little (a CPU
                    # is no faster per item in a bigger batch: its items go now)
                    if a.slot.device == "cuda" and waited < spec.batch_wait_s and self._upstream_busy(stage):
                        return
                batch = take_batch(spec, q, limit_s)
            self._send(stage, a, batch)

    def _upstream_busy(self, stage: str) -> bool:
        """Items are still in or before an earlier stage of a chain that leads here."""
        for chain, step in self._route.values():
            stages = CHAINS[chain]
            if stage in stages and step < stages.index(stage):
                return True
        return False

    def _send(self, stage: str, a: _Actor, batch: list) -> None:
        spec = STAGES[stage]
        items = [x for _, x, _ in batch]
        if spec.split_s:
            ks = [n_pieces(spec, secs) for _, _, secs in batch]
            refs = a.handle.process.options(num_returns=sum(ks)).remote(items, ks)
        else:
            refs = a.handle.process.options(num_returns=len(batch)).remote(items)
        refs = list(refs) if isinstance(refs, (list, tuple)) else [refs]
        now = time.monotonic()
        # a call queued behind others at its actor starts its clock when it can start
        self._calls[refs[0]] = _Call(stage, a, batch, refs, now, now + self.call_timeout_s * (a.inflight + 1))
        a.inflight += 1
        self._ncalls[stage] += 1
        self._filled[stage] += len(batch)

    def _ask_ids(self, stage: str, actor: Optional[_Actor] = None) -> None:
        """Ask ``actor`` (else any live actor of the stage) for the stage's model ids; with
        none alive, the stage's next actor is asked when it starts."""
        # one that has finished a call has loaded: its answer is there, or nearly
        actor = actor or max(self._actors[stage], key=lambda b: b.calls, default=None)
        if actor is None:
            self._pending_ids.pop(stage, None)
            self._seen_ids.discard(stage)
            return
        self._pending_ids[stage] = (actor, actor.handle.model_ids.remote())
        self._seen_ids.add(stage)

    def _take_ids(self, block: bool) -> None:
        """Model ids of the stages whose asked actor has loaded. ``block``: also wait for
        those whose actor has finished a call (its ids were asked before any call, so they
        are there); an actor still unplaced (a GPU not up yet) is not waited for.

        An actor retired (or killed) before it answered is not waited for either: another
        of its stage is asked. A model that failed to load fails the run here, with the
        actor's own error."""
        import ray
        from ray.exceptions import RayActorError

        if not self._pending_ids:
            return
        refs = [ref for _, ref in self._pending_ids.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for stage, (a, ref) in list(self._pending_ids.items()):
            # Ask another when the planner retired this one before it answered (an answer
            # already in is kept: it outlives the actor), or, before waiting, when the
            # stage's work ran on another while this one still loads.
            if ref not in ready and (a not in self._actors[stage] or (
                    block and not a.calls and any(b.calls for b in self._actors[stage]))):
                self._ask_ids(stage)
        if block:
            due = [ref for a, ref in self._pending_ids.values() if a.calls and ref not in ready]
            if due:
                ready += ray.wait(due, num_returns=len(due))[0]
        now = time.monotonic()
        for stage, (a, ref) in list(self._pending_ids.items()):
            if ref not in ready:
                continue
            try:
                ids = ray.get(ref)
            except RayActorError as e:
                live = a in self._actors[stage]
                if live and getattr(e, "actor_init_failed", False):
                    raise  # (one the planner retired while it loaded may read as such)
                self._ask_ids(stage, a if live else None)  # killed: ask again
                continue
            self._model_ids.update(ids)
            del self._pending_ids[stage]
            a.last_done = max(a.last_done, now)  # loading is not busy time

    def models_known(self) -> bool:
        self._take_ids(block=False)
        # Rows wait while a stage's actor comes up and loads, but not for one Ray has not
        # placed after workers.place_warn_s (a GPU node the autoscaler has yet to start):
        # they name its model once it is up, or null if it never is.
        return all(a.reported and _unplaced(a.handle) for a, _ in self._pending_ids.values())

    def wait(self, timeout: float) -> list[int]:
        import ray

        self._take_ids(block=False)
        self._replan()
        self._watch_placement(time.monotonic())
        for name in STAGES:
            self._dispatch(name)
        if not self._calls:
            if any(self._queues.values()):
                time.sleep(min(timeout, 0.2))  # waiting for actors (a GPU, a node) to come up
            return []
        refs = list(self._calls)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        out: list[int] = []
        for ref in ready:
            out += self._complete(self._calls.pop(ref))
        return out + self._cut_off_stuck()

    def _watch_placement(self, now: float) -> None:
        """Report, once each, the actors Ray has not started after ``workers.place_warn_s``:
        what they ask for against what the cluster has free. Their work waits for them."""
        import ray

        waiting = [a for acts in self._actors.values() for a in acts if not a.up and a.node_ref is not None]
        if not waiting:
            return
        ready = set(ray.wait([a.node_ref for a in waiting], num_returns=len(waiting), timeout=0)[0])
        late = []
        for a in waiting:
            if a.node_ref in ready:
                a.up = True
                try:
                    a.node = ray.get(a.node_ref)
                except Exception:  # died before it answered: where it was asked to go
                    a.node = None
                if a.reported:
                    log.info("%s actor started after %.0f s", a.slot.stage, now - a.started)
            elif not a.reported and now - a.started >= self._config.workers.place_warn_s:
                a.reported = True
                late.append(a)
        if not late:
            return
        free, total = ray.available_resources(), ray.cluster_resources()
        have = ", ".join(f"{k} {_amount(k, free.get(k, 0.0))} of {_amount(k, total.get(k, 0.0))}"
                         for k in ("CPU", "GPU", "memory") if total.get(k))
        after = f"{self._config.workers.place_warn_s:g} s"
        for (stage, where), mine in _group(late, lambda a: (a.slot.stage, _where(a.handle))).items():
            if where == "loading":  # it has a process: its models load slowly (slow storage, a big model)
                msg = f"{len(mine)} {stage} actor(s) placed but still loading their models after {after}"
                log.info(msg)
            else:
                word = "placed" if where == "unplaced" else "started"
                why = ("Ray is still starting worker processes, or a node is unwell" if _fits(mine[0].slot, free)
                       else "another job may hold them, or no node offers them")
                asks = ", ".join(f"{k} {_amount(k, v)}" for k, v in _asks(mine[0].slot).items() if v or k == "CPU")
                msg = (f"{len(mine)} {stage} actor(s) not {word} after {after}: each asks for {asks}; "
                       f"the cluster has {have} free ({why}); the {stage} work waits.")
                log.warning(msg)
            self._event(msg)

    def _complete(self, call: _Call) -> list[int]:
        now = time.monotonic()
        a = call.actor
        a.inflight -= 1
        a.calls += 1
        self._busy[call.stage] += now - max(call.t0, a.last_done)
        a.last_done = now
        for c in self._calls.values():
            if c.actor is a:
                c.deadline = min(c.deadline, now + self.call_timeout_s)
        done = []
        nexts = set()
        spec = STAGES[call.stage]
        at = 0
        for h, item, secs in call.batch:
            k = n_pieces(spec, secs) if spec.split_s else 1
            refs, at = call.refs[at:at + k], at + k
            self._media[call.stage] += secs
            if h not in self._route:
                continue  # a piece of an item sent again, or already failed: a stale result
            chain, step = self._route[h]
            stages = CHAINS[chain]
            if step + 1 < len(stages):
                from workers.actors import Upstream

                for piece, ref in self._pieces(h, chain, step + 1, secs, refs):
                    self._made_by[piece] = a  # the actor holding its result, if it turns out unreachable
                    self._queues[stages[step + 1]].append((piece, Upstream(call.stage, ref), self._seconds[piece]))
                    self._queued_at[piece] = now
                nexts.add(stages[step + 1])
                continue
            ref = refs[0]
            value = self._fetch(call, ref)
            if isinstance(value, Lost) and value.unreachable:
                # The actor that made its earlier result cannot be reached (killed, or on a
                # node going away that Ray has not declared dead yet): it rests a while, and
                # the item goes through its chain once more. A file that kills its worker
                # every time then fails as one whose worker died.
                self._cool(self._made_by.get(h), value.unreachable)
                root = self._root(h)
                tries = self._unavailable.get(root, 0) + 1
                self._unavailable[root] = tries
                if tries <= 1 and self._restart(h, chain, secs, "an earlier stage's worker was unreachable"):
                    continue
                value = VidanError(STAGES[value.stage].report_stage, f"worker process died: {value.unreachable}")
            if isinstance(value, Lost):
                if self._again(h, chain, secs):
                    continue
                value = VidanError(STAGES[call.stage].report_stage, "its results were lost with a node, three times")
            if value is _UNAVAILABLE:
                # Its actor could not be reached (its worker was killed, its node is going):
                # Ray does not retry such a call, since it may have run; vidan's stages have
                # no side effects, so it is sent again, to another actor, a bounded number of times.
                self._cool(a, call.error)
                tries = self._unavailable.get(h, 0) + 1
                self._unavailable[h] = tries
                value = _SPLIT if tries <= MAX_TASK_RETRIES else VidanError(
                    STAGES[call.stage].report_stage, f"worker process unavailable {tries} times: {call.error}")
            if value is _SPLIT:
                self._alone.add(h)
                self._queues[call.stage].appendleft((h, item, secs))
                continue
            done += self._finish(h, value)
        for name in (*nexts, call.stage):
            self._dispatch(name)
        return done

    def _again(self, h: int, chain: str, secs: float) -> bool:
        """Send an item through its chain again from the start (its earlier results were
        lost with a node); False once it has been sent again twice."""
        n = self._redone.get(self._root(h), 0)
        if n >= 2:
            return False
        self._redone[self._root(h)] = n + 1
        return self._restart(h, chain, secs, "a lost node took its results")

    def _restart(self, h: int, chain: str, secs: float, why: str) -> bool:
        if h in self._parent:  # a piece: its whole item goes again, from the stage that cut it
            h = self._parent[h][0]
            secs = self._joins[h].seconds
            self._drop_pieces(h)
        if h not in self._items:
            return False
        self._route[h] = (chain, 0)
        self._queues[CHAINS[chain][0]].append((h, self._items[h], secs))
        self._event(f"item {h} sent again: {why}")
        self._dispatch(CHAINS[chain][0])
        return True

    def _cool(self, a: Optional[_Actor], why: str) -> None:
        """Send an unreachable actor nothing for ``UNREACHABLE_COOL_S``: long enough for
        Ray to restart a killed worker, or to declare a lost node dead and restart the
        actor elsewhere. (Killing it instead left calls hanging on a node going away.)"""
        if a is None:
            return
        a.cool_until = time.monotonic() + UNREACHABLE_COOL_S
        self._event(f"cooling {_label(a.slot)}: {why}")

    def _forget(self, h: int) -> None:
        self._route.pop(h, None)
        self._made_by.pop(h, None)
        self._seconds.pop(h, None)
        self._queued_at.pop(h, None)
        self._items.pop(h, None)
        self._redone.pop(h, None)
        self._unavailable.pop(h, None)
        self._alone.discard(h)

    def _finish(self, h: int, value: Any) -> list[int]:
        """An item's chain is done; the handles now done for the driver: the item's, or
        its item's once this was the last of its pieces (or the first to fail)."""
        self._forget(h)
        if h not in self._parent:
            self._done[h] = value
            return [h]
        parent, j = self._parent.pop(h)
        join = self._joins[parent]
        if not join.add(j, value) and not isinstance(value, BaseException):
            return []
        self._drop_pieces(parent)  # after a failed piece, the others are not waited for
        self._forget(parent)
        self._done[parent] = join.result() if not join.left else value
        return [parent]

    def _pieces(self, h: int, chain: str, step: int, secs: float, refs: list) -> list[tuple[int, Any]]:
        """Item ``h`` moves to ``step`` of its chain: whole (one ref), or as one new item
        a piece (several); (handle, ref) for each."""
        if len(refs) == 1:
            self._route[h] = (chain, step)
            return [(h, refs[0])]
        self._route.pop(h)  # it waits for its pieces, which are items of their own
        join = self._joins[h] = Join(STAGES[CHAINS[chain][step - 1]], len(refs), secs)
        out = []
        for j, ref in enumerate(refs):
            c = self._next
            self._next += 1
            self._parent[c] = (h, j)
            self._route[c] = (chain, step)
            self._seconds[c] = secs / len(refs)
            join.pieces.append(c)
            out.append((c, ref))
        return out

    def _drop_pieces(self, h: int) -> None:
        """Forget item ``h``'s pieces still on their way: out of the queues, and their
        results, when calls already sent bring them, ignored."""
        join = self._joins.pop(h, None)
        if join is None:
            return
        gone = set(join.pieces)
        for c in gone:
            self._parent.pop(c, None)
            self._forget(c)
        for name, q in self._queues.items():
            if any(x[0] in gone for x in q):
                self._queues[name] = deque(x for x in q if x[0] not in gone)

    def _root(self, h: int) -> int:
        """The item a piece was cut from (an item is its own)."""
        return self._parent[h][0] if h in self._parent else h

    def _fetch(self, call: _Call, ref: Any) -> Any:
        import ray
        from ray.exceptions import (ActorUnavailableError, ObjectLostError, RayActorError, RayTaskError,
                                    WorkerCrashedError)

        spec = STAGES[call.stage]
        try:
            return ray.get(ref)
        except ObjectLostError:  # the result was on a node that is gone
            return Lost(call.stage)
        except RayTaskError as e:
            log.debug("%s stage failed in a worker:\n%s", call.stage, e)  # the remote traceback, for --debug
            cause = e.cause if getattr(e, "cause", None) is not None else e
            return cause if isinstance(cause, VidanError) else VidanError(
                spec.report_stage, f"{type(cause).__name__}: {cause}")
        except (RayActorError, WorkerCrashedError) as e:
            if getattr(e, "actor_init_failed", False):
                raise  # its model did not load: every file would fail the same way
            log.debug("%s worker died:\n%s", call.stage, e)
            if len(call.batch) > 1:
                return _SPLIT  # one of them kills the worker: send each alone to find which
            if isinstance(e, ActorUnavailableError):
                call.error = first_line(e)
                return _UNAVAILABLE
            # The actor died (native crash, out of memory) on each of Ray's tries; Ray
            # restarts it for the next file.
            return VidanError(spec.report_stage, f"worker process died: {str(e).splitlines()[0]}")

    def _cut_off_stuck(self) -> list[int]:
        """Fail the calls that ran past ``call_timeout_s``: cancel each (so Ray does not
        retry it) and replace its actor. Returns their handles, now done."""
        import ray

        now = time.monotonic()
        out = []
        for ref in [r for r, c in self._calls.items() if now > c.deadline]:
            call = self._calls.pop(ref, None)
            if call is None:  # queued behind an earlier stuck call of its actor: sent again
                continue
            log.warning("%s call ran past %g s: cancelled, worker replaced", call.stage, self.call_timeout_s)
            for r in call.refs:
                ray.cancel(r)
            self._replace(call.actor, now)
            stage = STAGES[call.stage].report_stage
            for h, _, _ in call.batch:
                if h not in self._route:
                    continue  # a piece no longer waited for
                out += self._finish(h, VidanError(stage, f"timed out: still running after {self.call_timeout_s:g} s; "
                                                         "the call was cancelled and its worker replaced"))
            self._dispatch(call.stage)
        return out

    def _replace(self, a: _Actor, now: float) -> None:
        """Kill ``a`` for good and start a fresh actor in its slot. (Restarted in place
        after a cancelled call, an actor made Ray hold the next call 30 s, waiting for the
        cancelled call's sequence number.) Calls queued behind the stuck one go back to the
        front of their queue: they did nothing wrong."""
        self._end(a, now, "replaced (a call was stuck)")
        self._start([a.slot])

    def _take_back(self, a: _Actor) -> None:
        """Cancel the calls ``a`` holds and put their items back at the front of their queue."""
        import ray

        for ref, c in list(self._calls.items()):
            if c.actor is a:
                del self._calls[ref]
                a.inflight -= 1
                for r in c.refs:
                    ray.cancel(r)
                self._queues[c.stage].extendleft(reversed([x for x in c.batch if x[0] in self._route]))

    def result(self, handle: int) -> Any:
        # The driver writes a finished video's row with the provenance dict ``start``
        # returned: the ids of every actor that has finished a call are in it first (each
        # was asked before its first call, so its answer is there, not to be waited for).
        self._take_ids(block=True)
        return chain_result(self._done.pop(handle))

    # --- what it did ------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, float]]:
        """Per stage: actors now and ever started, calls, mean batch, busy seconds, and
        how busy the pool was (busy seconds over the seconds its actors existed)."""
        now = time.monotonic()
        out = {}
        for name in STAGES:
            acts = self._actors[name] + [a for a in self._gone if a.slot.stage == name]
            alive_s = sum((a.ended or now) - a.started for a in acts)
            out[name] = {
                "actors": len(self._actors[name]), "started": len(acts), "calls": self._ncalls[name],
                "mean_batch": round(self._filled[name] / self._ncalls[name], 2) if self._ncalls[name] else 0.0,
                "busy_s": round(self._busy[name], 3),
                "busy": round(self._busy[name] / alive_s, 3) if alive_s > 0 else 0.0,
                "calls_by_node": self._calls_by_node(acts),
            }
        return out

    @staticmethod
    def _calls_by_node(acts: list[_Actor]) -> dict[str, int]:
        """Calls each node's actors of one stage completed (where Ray really placed them)."""
        import ray

        out: dict[str, int] = {}
        for a in acts:
            try:
                node = ray.get(a.node_ref, timeout=5) if a.node_ref is not None else "?"
            except Exception:  # an actor that never came up, or died with its node
                node = a.slot.node_id or "?"
            out[node] = out.get(node, 0) + a.calls
        return out

    def forget_scratch(self, inputs: list[tuple[str, str]]) -> None:
        """The stages' scratch copies of ``inputs`` removed on every node they ran on: an
        object-storage input or a file put on one clock is copied once per node that
        reads it, and a nightly run over a bucket would otherwise fill each node's scratch
        up to its eviction limit. A node gone, or slow to answer, is left as it is."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from workers.actors import forget_here

        if not inputs or not ray.is_initialized():
            return
        # where the actors that ran calls are (an actor that ran none made no copy; one that
        # did has answered where it is, so nothing is waited for here)
        worked = [a for acts in (*self._actors.values(), self._gone) for a in acts if a.calls]
        nodes = set(self._calls_by_node(worked))
        nodes &= {n.node_id for n in _nodes()}  # a node gone took its scratch with it, or keeps it till it returns
        if not nodes:
            return
        task = ray.remote(forget_here)
        refs = {task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node, soft=False)).remote(inputs): node for node in sorted(nodes)}
        done, late = ray.wait(list(refs), num_returns=len(refs), timeout=self.forget_wait_s)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as e:
                log.debug("could not remove scratch copies on node %s: %s", refs[ref], e)
        for ref in late:
            log.debug("scratch copies on node %s not removed: no answer in %g s", refs[ref], self.forget_wait_s)
            ray.cancel(ref)

    def shutdown(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        if self._asked_gpus:
            try:
                from ray.autoscaler.sdk import request_resources

                request_resources(bundles=[])
            except Exception:
                pass
        handles = [a.handle for acts in self._actors.values() for a in acts]
        for h in handles:
            ray.kill(h)
        # Hold the handles until Ray reports the actors dead: a handle dropped while its kill
        # is in flight can make Ray end the actor "gracefully" instead, after its running
        # call (up to 30 s), and the next run on this Ray would find those cores taken.
        if handles:
            # (not retried: the actors' own retry count would print a warning per retry)
            ray.wait([h.__ray_ready__.options(max_task_retries=0).remote() for h in handles],
                     num_returns=len(handles), timeout=self.shutdown_wait_s)
        for acts in self._actors.values():
            acts.clear()
        self._calls.clear()
        if self._started_ray:
            stop_ray()
