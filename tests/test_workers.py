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


def _visual_job(tmp_path, seconds, photo, size=(320, 240)):
    from vidan import synth
    from vidan.media.probe import probe
    from vidan.records import Span
    from vidan.stages import PartJob
    from vidan.synth import Scene

    path = synth.write_video(tmp_path / "v.mp4", [Scene(seconds, synth.photo(photo))], size=size)
    info = probe(path)
    return PartJob("v", str(path), info, Span(0.0, info.duration_s), 0, 1)


def _run(ex, handle, poll_s):
    done = []
    while handle not in done:
        done = ex.wait(timeout=poll_s)
    return ex.result(handle)


def test_a_worker_killed_mid_call_is_replaced_and_the_work_goes_on(ray_local, tmp_path):
    """The actor dies under a call (as on an OOM kill): Ray restarts it, the call is tried
    again on the new actor (a bounded number of times), and later calls run normally."""
    from vidan.config import Config
    from vidan.records import FramePart
    from workers.ray_executor import RayExecutor

    job = _visual_job(tmp_path, 3.0, "coffee")
    ex = RayExecutor()
    ex.start(Config())
    try:
        h = ex.submit("visual", job)
        (_, _, actor), = ex._inflight.values()
        ray_local.kill(actor, no_restart=False)
        first = _run(ex, h, 60)
        assert isinstance(first, FramePart) and first.frames_sampled >= 3
        assert ray_local.get(actor.model_id.remote()).startswith("efficientnet")  # the restarted actor answers
        assert _run(ex, ex.submit("visual", job), 60).frames_sampled == first.frames_sampled
    finally:
        ex.shutdown()


def test_embedded_ray_stays_on_loopback(ray_local):
    assert {n["NodeManagerAddress"] for n in ray_local.nodes()} == {"127.0.0.1"}


def test_a_stuck_call_is_cut_off_and_the_pool_recovers(ray_local, tmp_path):
    """A call that runs past the executor's deadline is cancelled and its worker restarted;
    the file fails with "timed out", and the next call runs normally."""
    import pytest

    from vidan.config import Config
    from vidan.records import FramePart, VidanError
    from workers.ray_executor import RayExecutor

    job = _visual_job(tmp_path, 20.0, "rocket", size=(640, 360))
    ex = RayExecutor(call_timeout_s=0.3)  # far below what decoding 20 s of video takes
    ex.start(Config())
    try:
        with pytest.raises(VidanError, match="timed out") as err:
            _run(ex, ex.submit("visual", job), 0.2)
        assert err.value.stage == "decode" and "timed out" in err.value.message
        ex.call_timeout_s = 300
        assert isinstance(_run(ex, ex.submit("visual", job), 0.2), FramePart)
    finally:
        ex.shutdown()
