"""How many actors of each stage, on which node, asking for what: pure planning.

Given the cluster's nodes and how much work each stage still has, ``plan`` says which
actors should exist. The Ray executor calls it at start and again every few seconds
(``workers.replan_s``) and starts or retires actors to match, so a node that joins gets
work and cores move to the stage that is behind. Rules:

* GPU stages get one actor per GPU on every GPU node (their GPU shares add up to at
  most one GPU), and one core each there.
* Every other core of every node goes to the CPU stages (decoding, audio, and the
  encoders when there is no GPU to run them), split by the work each has left,
  measured as the seconds of media still to pass through it times the seconds each
  media second has cost it so far. Each stage with work left keeps at least one actor.
* A one-actor stage (finishing) asks for no core, so it can always be placed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from vidan.stages.registry import CORES, GPU, ONE, STAGES, StageSpec


@dataclass(frozen=True)
class Node:
    node_id: str
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class Slot:
    """One actor the plan wants: a stage, the node it should run on, what it asks for."""

    stage: str
    node_id: Optional[str]  # None: anywhere
    num_cpus: float
    num_gpus: float
    device: str  # "cuda" | "cpu"
    threads: int

    @property
    def key(self) -> tuple:
        return (self.stage, self.node_id, self.device)


def plan(nodes: Iterable[Node], *, device: str = "auto", demand: Optional[Mapping[str, float]] = None,
         stages: Optional[Mapping[str, StageSpec]] = None, gpu_stages_wait: bool = False) -> list[Slot]:
    """The actors the cluster should run now.

    ``demand``: each stage's work left (any unit, compared between stages); a stage at 0
    gets no actor; missing stages get their spec's ``weight``. ``gpu_stages_wait``: GPU
    stages get no CPU actors while a GPU is being waited for.
    """
    stages = dict(stages or STAGES)
    nodes = sorted(nodes, key=lambda n: n.node_id)
    demand = {name: (spec.weight if demand is None or name not in demand else demand[name])
              for name, spec in stages.items()}
    use_gpu = device != "cpu" and any(n.gpus >= 1 for n in nodes)
    slots: list[Slot] = []
    free = {n.node_id: float(n.cpus) for n in nodes}

    gpu_names = [name for name, s in stages.items() if s.scale == GPU and demand[name] > 0]
    if use_gpu:
        for n in nodes:
            per_gpu = int(n.gpus)
            for name in gpu_names:
                spec = stages[name]
                for _ in range(per_gpu):
                    cpus = min(spec.cpus, max(0.0, free[n.node_id]))
                    free[n.node_id] -= cpus
                    slots.append(Slot(name, n.node_id, cpus, spec.gpus, "cuda", max(1, math.ceil(spec.cpus))))

    cpu_names = [name for name, s in stages.items() if s.scale == CORES and demand[name] > 0]
    if not use_gpu and not gpu_stages_wait:
        cpu_names += gpu_names
    slots += _cpu_slots(cpu_names, {k: demand[k] for k in cpu_names}, nodes, free)

    for name, s in stages.items():
        if s.scale == ONE and demand[name] > 0:
            # no GPU reserved, so none used: Ray leaves every GPU visible to an actor that
            # asked for none, and one that used them would crowd the encoders' shares
            slots.append(Slot(name, None, 0.0, 0.0, "cpu", 1))
    return slots


def _cpu_slots(names: list[str], demand: Mapping[str, float], nodes: list[Node],
               free: dict[str, float]) -> list[Slot]:
    total = sum(max(0.0, f) for f in free.values())
    if not names or total <= 0:
        # no core left anywhere: still one small actor per stage, so work moves
        return [Slot(name, None, 0.0, 0.0, "cpu", 1) for name in names]
    counts = _split(max(len(names), int(total)), {k: demand[k] for k in names})
    n_actors = sum(counts.values())
    per = min(1.0, total / n_actors)
    # interleave the stages, then give each actor to the node with most cores left
    order = [name for i in range(max(counts.values())) for name in names if counts[name] > i]
    left = dict(free)
    on_node: Counter = Counter()
    slots = []
    for name in order:
        node = max(nodes, key=lambda n: (left[n.node_id], -on_node[n.node_id]))
        # never ask a node for more than it has left: an actor no node can hold would wait
        # unplaced forever (a small node's last actor takes what is left, even nothing)
        cpus = math.floor(min(per, max(0.0, left[node.node_id])) * 1e4) / 1e4
        left[node.node_id] -= cpus
        on_node[node.node_id] += 1
        # One thread an actor, encoders included: on a node whose cores all stages share,
        # a second thread only spins against the other stages (EfficientNet on 2 busy
        # cores: 74 ms an image with 2 threads, 54 ms with 1).
        slots.append(Slot(name, node.node_id, cpus, 0.0, "cpu", max(1, math.ceil(cpus))))
    return slots


def _split(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """``n`` actors over stages in proportion to ``weights``, each at least one
    (largest remainders for the rest).

    Not more actors than that, even for a stage with over its share of the work: each
    actor costs its process and its models' load (about 1.5 CPU s) on cores that are
    busy anyway. Tried on two cores, rounding each stage's share up (two speech actors
    from the start) made a talk with speech throughout 6% faster and 40 short clips 8%
    slower; a pool that is behind grows when the stages before it are done instead.
    """
    names = list(weights)
    total = sum(weights.values()) or 1.0
    counts = {k: 1 for k in names}
    rest = n - len(names)
    if rest <= 0:
        return counts
    share = {k: rest * weights[k] / total for k in names}
    for k in names:
        counts[k] += int(share[k])
    left = rest - sum(int(v) for v in share.values())
    for k in sorted(names, key=lambda k: share[k] - int(share[k]), reverse=True)[:left]:
        counts[k] += 1
    return counts


def diff(want: list[Slot], have: Mapping[tuple, int]) -> tuple[list[Slot], dict[tuple, int]]:
    """Actors to start (slots) and to retire (count per slot key), from what runs now.

    Counted per stage and device, not per node: a warm actor is not moved to another
    node just because the plan would place it there today; only where a stage has too
    few (or too many) actors in all are some started (or retired), on the nodes furthest
    below (or above) the plan.
    """
    want_keys = Counter(s.key for s in want)
    by_kind: dict[tuple, list[Slot]] = {}
    for s in want:
        by_kind.setdefault((s.stage, s.device), []).append(s)
    have_kind: Counter = Counter()
    for (stage, _node, device), n in have.items():
        have_kind[(stage, device)] += n
    start: list[Slot] = []
    retire: dict[tuple, int] = {}
    for kind in set(by_kind) | set(have_kind):
        slots = by_kind.get(kind, [])
        gap = len(slots) - have_kind.get(kind, 0)
        if gap > 0:
            # the slots on the nodes furthest below the plan first
            deficit = Counter({s.key: want_keys[s.key] - have.get(s.key, 0) for s in slots})
            for s in slots:
                if gap and deficit[s.key] > 0:
                    start.append(s)
                    deficit[s.key] -= 1
                    gap -= 1
            start += [s for s in slots if s not in start][:gap]
        elif gap < 0:
            surplus = sorted((k for k in have if (k[0], k[2]) == kind),
                             key=lambda k: have[k] - want_keys.get(k, 0), reverse=True)
            for k in surplus:
                while gap < 0 and retire.get(k, 0) < have[k]:
                    retire[k] = retire.get(k, 0) + 1
                    gap += 1
                    if have[k] - retire[k] <= want_keys.get(k, 0):
                        break
            for k in surplus:  # still too many: take from anywhere
                while gap < 0 and retire.get(k, 0) < have[k]:
                    retire[k] = retire.get(k, 0) + 1
                    gap += 1
    return start, retire
