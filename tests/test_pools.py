"""Pool planning (pure): how many actors of each stage, where, asking for what."""

from collections import Counter

from vidan.pools import Node, diff, plan
from vidan.stages.registry import STAGES


def _count(slots, node=None, device=None):
    return Counter(s.stage for s in slots if (node is None or s.node_id == node)
                   and (device is None or s.device == device))


def test_a_gpu_node_gets_one_encoder_of_each_kind_per_gpu_and_decoders_on_its_other_cores():
    slots = plan([Node("g", cpus=16, gpus=1)])
    gpu = [s for s in slots if s.num_gpus > 0]
    assert sorted(s.stage for s in gpu) == ["asr", "vision"]
    assert all(s.device == "cuda" and s.node_id == "g" for s in gpu)
    assert sum(s.num_gpus for s in gpu) <= 1.0  # shares of one GPU never add up to more
    cpu = _count([s for s in slots if s.stage != "finish"], device="cpu")
    # the cores the encoders leave are all used: decoders are sized by cores, not GPUs
    assert cpu["decode"] >= 7 and sum(cpu.values()) == 14 and "vision" not in cpu and "asr" not in cpu
    assert abs(sum(s.num_cpus for s in slots if s.device == "cpu") - 14) < 0.01
    assert [s.num_cpus for s in slots if s.stage == "finish"] == [0.0]
    assert sum(s.num_cpus for s in slots) <= 16
    # only an actor that reserved a share of a GPU is told to use one
    assert all((s.device == "cuda") == (s.num_gpus > 0) for s in slots)


def test_two_cores_give_one_actor_per_stage_within_the_cores():
    slots = plan([Node("n", cpus=2)])
    assert _count(slots) == Counter({"decode": 1, "vision": 1, "audio": 1, "asr": 1, "finish": 1})
    assert sum(s.num_cpus for s in slots) <= 2
    assert all(s.num_gpus == 0 and s.device == "cpu" and s.threads == 1 for s in slots)
    # work even between two stages: one actor each, both cores theirs
    even = plan([Node("n", cpus=2)], demand={"decode": 1.0, "vision": 0.0, "audio": 0.0, "asr": 1.0, "finish": 1})
    assert _count(even) == Counter({"decode": 1, "asr": 1, "finish": 1})


def test_device_cpu_keeps_encoders_off_the_gpus():
    slots = plan([Node("g", cpus=16, gpus=2)], device="cpu")
    assert all(s.num_gpus == 0 and s.device == "cpu" for s in slots)
    assert _count(slots)["asr"] >= 1 and _count(slots)["vision"] >= 1


def test_cpu_nodes_get_decoders_and_gpu_nodes_get_encoders():
    nodes = [Node("cpu1", 4), Node("cpu2", 4), Node("gpu", 2, gpus=1)]
    slots = plan(nodes)
    for n in ("cpu1", "cpu2"):
        assert _count(slots, n)["decode"] >= 1
        assert not [s for s in slots if s.node_id == n and s.stage in ("vision", "asr")]
    assert _count(slots, "gpu", "cuda") == Counter({"vision": 1, "asr": 1})


def test_a_node_that_joins_gets_actors():
    before = plan([Node("a", 4)])
    after = plan([Node("a", 4), Node("b", 4)])
    start, retire = diff(after, Counter(s.key for s in before))
    assert any(s.node_id == "b" for s in start) and not retire


def test_cores_follow_the_work_left():
    nodes = [Node("a", 8)]
    even = _count(plan(nodes))
    asr_behind = _count(plan(nodes, demand={"decode": 1.0, "vision": 1.0, "audio": 1.0, "asr": 50.0, "finish": 1}))
    assert asr_behind["asr"] > even["asr"] and asr_behind["decode"] < even["decode"]
    # a stage with nothing left gets no actor; its cores go to the others
    done = _count(plan(nodes, demand={"decode": 0.0, "vision": 1.0, "audio": 0.0, "asr": 5.0, "finish": 1}))
    assert done["decode"] == 0 and done["audio"] == 0 and done["asr"] >= 4


def test_while_waiting_for_a_gpu_encoders_get_no_cpu_actors():
    slots = plan([Node("a", 8)], gpu_stages_wait=True)
    assert _count(slots)["vision"] == 0 and _count(slots)["asr"] == 0 and _count(slots)["decode"] >= 1


def test_diff_retires_what_the_plan_no_longer_wants():
    have = Counter({("decode", "a", "cpu"): 3, ("asr", "a", "cpu"): 1})
    want = plan([Node("a", 4)], demand={"decode": 0.1, "vision": 0.0, "audio": 0.0, "asr": 10.0, "finish": 1})
    start, retire = diff(want, have)
    assert retire.get(("decode", "a", "cpu"), 0) >= 1
    assert all(s.stage in ("asr", "finish") for s in start)


def test_every_stage_declares_its_needs():
    for spec in STAGES.values():
        assert spec.cpus >= 0 and 0 <= spec.gpus <= 1 and spec.batch >= 1 and spec.inflight >= 1
    assert STAGES["vision"].batch > 1 and STAGES["asr"].batch > 1  # encoders batch across videos
    assert STAGES["vision"].inflight >= 2 and STAGES["asr"].inflight >= 2


def test_no_node_is_asked_for_more_cores_than_it_has():
    """A head with one core and a worker with two: four CPU stages at 0.75 cores each
    would leave one actor that no node can hold, waiting unplaced for ever."""
    nodes = [Node("head", 1), Node("worker", 2)]
    for demand in (None, {"decode": 5.0, "vision": 1.0, "audio": 1.0, "asr": 9.0, "finish": 1}):
        slots = plan(nodes, demand=demand)
        for n in nodes:
            assert sum(s.num_cpus for s in slots if s.node_id == n.node_id) <= n.cpus + 1e-9, slots
        assert {"decode", "vision", "audio", "asr", "finish"} <= {s.stage for s in slots}


def test_a_pool_grows_only_for_work_a_new_actor_could_take():
    """At a run's tail the part still decoding is most of the stage's demand; an actor
    started for it would load its models and find nothing left to do."""
    from vidan.config import Config
    from workers.ray_executor import RayExecutor, _Actor, _Call

    ex = RayExecutor()  # no Ray: only the planner's bookkeeping is used
    ex._config = Config()  # workers.grow_min_s: 6 s of work for each actor
    slot = plan([Node("n", 2)])[0]
    decoding = _Actor(handle=None, slot=slot)
    ex._actors["decode"] = [decoding]
    ex._busy["decode"], ex._media["decode"] = 12.0, 120.0  # 0.1 s a media second
    ex._calls["ref"] = _Call("decode", decoding, [(1, None, 120.0)], [], 0.0, 0.0)
    grow = next(s for s in plan([Node("n", 8)]) if s.stage == "decode")
    # 120 s in flight and 60 s queued: 18 s of demand, 6 s of it a new actor could share
    assert not ex._worth_starting(grow, {"decode": 18.0})
    # ten more minutes queued: worth a second decoder
    assert ex._worth_starting(grow, {"decode": 78.0})
    ex._calls.clear()  # nothing in flight: all 18 s could be shared
    assert ex._worth_starting(grow, {"decode": 18.0})
