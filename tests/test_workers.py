"""How the Ray executor sizes its actor pools for a cluster (pure; no Ray started)."""

from workers.ray_executor import plan_pools


def test_small_cpu_machine_gets_one_actor_per_stage_within_its_cpus():
    plans = plan_pools(cpus=2, gpus=0)
    assert {k: p.size for k, p in plans.items()} == {"visual": 1, "audio": 1, "finish": 1}
    assert sum(p.size * p.num_cpus for p in plans.values()) <= 2
    assert all(p.num_gpus == 0 and p.device == "cpu" for p in plans.values())


def test_gpu_cluster_encoders_ask_for_gpu_shares():
    plans = plan_pools(cpus=16, gpus=2)
    for kind in ("visual", "audio"):
        assert plans[kind].size == 2 and plans[kind].num_gpus == 0.5 and plans[kind].device == "cuda"
    # two encoders share each GPU: the pools together never ask for more GPUs than exist
    assert sum(p.size * p.num_gpus for p in plans.values()) <= 2


def test_device_cpu_keeps_encoders_off_the_gpus():
    plans = plan_pools(cpus=16, gpus=2, device="cpu")
    assert all(p.num_gpus == 0 and p.device == "cpu" for p in plans.values())
    assert plans["visual"].size == 4 and plans["visual"].threads == 2
