"""The Ray executor: a file whose actor call fails, kills its worker or hangs fails alone
(real local Ray). How pools are sized is in test_pools.py; the stage graph on a
multi-node cluster in test_stage_graph.py."""

import os
import time
from pathlib import Path

import pytest

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
    again on the new actor (a bounded number of times), and later calls run normally
    (on a new actor when the pool retired the idle one meanwhile)."""
    from vidan.config import Config
    from vidan.records import FramePart
    from workers.ray_executor import RayExecutor

    job = _visual_job(tmp_path, 3.0, "coffee")
    ex = RayExecutor()
    ex.start(Config())
    try:
        h = ex.submit("visual", job)
        (call,) = ex._calls.values()  # the decoding call
        actor = call.actor.handle
        ray_local.kill(actor, no_restart=False)
        first = _run(ex, h, 60)
        assert isinstance(first, FramePart) and first.frames_sampled >= 3
        assert _run(ex, ex.submit("visual", job), 60).frames_sampled == first.frames_sampled
    finally:
        ex.shutdown()


def test_work_queued_at_an_actor_ray_cannot_place_moves_to_one_it_can(ray_local, tmp_path):
    """An actor Ray holds unplaced (after a lost node, a restart whose cores other pools
    took) must not keep the call queued at it: retired by the planner, it goes first,
    and its item runs on a placed actor (it used to wait out the call timeout)."""
    from dataclasses import replace

    from vidan.config import Config
    from vidan.pools import Slot
    from vidan.records import FramePart
    from workers.ray_executor import RayExecutor

    cfg = Config()
    ex = RayExecutor()
    ex.start(replace(cfg, workers=replace(cfg.workers, replan_s=3600)))  # the test retires, not the timer
    try:
        stuck_slot = Slot("vision", None, 64.0, 0.0, "cpu", 1)  # no node has 64 cores
        ex._start([stuck_slot])
        stuck = ex._actors["vision"].pop()
        ex._actors["vision"].insert(0, stuck)  # first in line for the next call
        h = ex.submit("visual", _visual_job(tmp_path, 2.0, "coffee"))
        # generous: on a loaded machine the first actors take tens of seconds to start
        deadline = time.monotonic() + 180
        while not stuck.inflight:
            assert time.monotonic() < deadline, "the vision call never reached the unplaced actor"
            assert h not in ex.wait(timeout=0.5)
        ex._retire({stuck_slot.key: 1}, time.monotonic())  # what the next plan asks: it never wanted it
        assert stuck.ended is not None and stuck not in ex._actors["vision"]
        done = []
        while h not in done:
            assert time.monotonic() < deadline + 120, ex.events[-5:]
            done = ex.wait(timeout=0.5)
        assert isinstance(ex.result(h), FramePart)
    finally:
        ex.shutdown()


def test_a_stage_whose_first_actor_is_retired_before_it_loaded_still_names_its_models(ray_local, tmp_path):
    """Model ids are read as actors load, not awaited at start; the planner may retire a
    stage's first actor before it has answered (another stage needed the core), and the
    report must still name the stage's models: another actor of the stage is asked."""
    from vidan.config import Config
    from vidan.records import FramePart
    from vidan.stages.vision import VisionStage
    from workers.ray_executor import RayExecutor

    expected = VisionStage(Config(), device="cpu").model_ids()
    ex = RayExecutor()
    ids = ex.start(Config())
    try:
        # an answer in before its actor was retired is kept, not asked of another actor
        # (whichever stage answers first: the test is not about how fast one actor starts)
        asked = {ref: (stage, a) for stage, (a, ref) in ex._pending_ids.items() if stage in ("audio", "asr")}
        ready, _ = ray_local.wait(list(asked), num_returns=1, timeout=300)
        assert ready, "neither the audio nor the speech actor came up in 300 s"
        stage, answered = asked[ready[0]]
        ex._retire({answered.slot.key: len(ex._actors[stage])}, time.monotonic())  # (two speech actors on two cores)
        assert not ex._actors[stage]
        ex._take_ids(block=False)
        assert stage not in ex._pending_ids
        answer = ray_local.get(ready[0])
        assert answer and {k: ids.get(k) for k in answer} == answer
        first = ex._actors["vision"][0]
        ex._retire({first.slot.key: 1}, time.monotonic())
        assert first not in ex._actors["vision"]
        part = _run(ex, ex.submit("visual", _visual_job(tmp_path, 2.0, "coffee")), 60)
        assert isinstance(part, FramePart)
        ex._take_ids(block=True)  # what taking a result does, before a video's rows are written
        assert {k: ids.get(k) for k in expected} == expected
    finally:
        ex.shutdown()


@pytest.mark.allow_error_logs
def test_a_model_that_does_not_load_fails_the_run_with_its_own_error(ray_local, tmp_path):
    """Not a failed row per file ("worker process died"): the run stops, and says why,
    the first time the stage is needed (here: speech to recognise)."""
    from dataclasses import replace

    from vidan import synth
    from vidan.config import Config
    from vidan.pipeline import run
    from vidan.synth import Scene
    from workers.ray_executor import RayExecutor

    speech = synth.speech_clip(synth.speech_names()[0])
    seconds = len(synth.read_audio(speech)) / 16000 + 1.0
    video = synth.write_video(tmp_path / "a.mp4", [Scene(seconds, synth.photo("coffee"))], size=(160, 120),
                              audio=speech)
    cfg = Config()
    cfg = replace(cfg, asr=replace(cfg.asr, model=str(tmp_path / "no-such-model")))
    with pytest.raises(Exception, match="unknown faster-whisper model") as err:
        run([str(video)], tmp_path / "out", cfg, RayExecutor(), progress=False)
    assert "no-such-model" in str(err.value)
    assert not list((tmp_path / "out").rglob("*.parquet"))  # no file was failed for it


def _free_cpus(ray, wait_s: float) -> float:
    """The CPUs free on the shared Ray, once all are or after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources().get("CPU", 0):
            break
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0)


def test_actors_the_cluster_cannot_start_are_reported_and_their_work_waits_for_them(ray_local, tmp_path, caplog):
    """Another job holds every core: vidan's actors cannot start. The run says so (what
    they ask for, what is free) instead of waiting without a word, and its work goes on
    once the cores are free."""
    from dataclasses import replace

    from vidan.config import Config
    from vidan.pools import Node, plan
    from vidan.records import FramePart
    from workers.ray_executor import RayExecutor

    class OtherJob:  # defined here, so Ray ships it by value to a worker
        def ready(self) -> bool:
            return True

    # The other job takes every core that is free. Actors of earlier tests on this shared
    # Ray may still be winding down (Ray lets a graceful exit run 30 s), so it waits for
    # them a while; but Ray 2.60 sometimes never gives back half a core after a series of
    # killed and retired actors (every actor dead, no worker left: seen here and in CI),
    # and then the job takes what there is.
    free = _free_cpus(ray_local, wait_s=45)
    assert free >= 1, ray_local.available_resources()
    other = ray_local.remote(num_cpus=free)(OtherJob).remote()
    ex = RayExecutor()
    try:
        assert ray_local.get(other.ready.remote(), timeout=60)
        cfg = Config()
        ex.start(replace(cfg, workers=replace(cfg.workers, place_warn_s=2.0)))
        h = ex.submit("visual", _visual_job(tmp_path, 2.0, "coffee"))
        deadline = time.monotonic() + 60
        # each stage's actors are reported 2 s after their own start: wait for the decoder's
        while not [r for r in caplog.records if "decode actor(s) not placed after" in r.getMessage()]:
            assert time.monotonic() < deadline, "no report of the actors that could not start"
            assert h not in ex.wait(timeout=0.5)  # nothing runs while the other job holds the cores
        said = "\n".join(r.getMessage() for r in caplog.records if "actor(s) not placed after" in r.getMessage())
        # what the planner gives a decoder on two cores (its share of them)
        ask = next(s.num_cpus for s in plan([Node("n", 2)]) if s.stage == "decode")
        assert "decode actor(s) not placed after 2 s" in said and f"each asks for CPU {ask:g}," in said
        assert "the cluster has CPU 0 of 2" in said and "another job may hold them" in said
        ray_local.kill(other)  # the other job ends
        assert isinstance(_run(ex, h, 60), FramePart)
    finally:
        ex.shutdown()
        ray_local.kill(other)


def test_embedded_ray_stays_on_loopback(ray_local):
    assert {n["NodeManagerAddress"] for n in ray_local.nodes()} == {"127.0.0.1"}


def test_a_stuck_call_is_cut_off_and_the_pool_recovers(ray_local, tmp_path):
    """A call that runs past the executor's deadline is cancelled and its worker replaced
    by a fresh actor; the file fails with "timed out", and the next call runs normally.
    (An actor restarted in place held that next call 30 s: Ray waited for the cancelled
    call's sequence number.)"""
    import pytest

    from vidan.config import Config
    from vidan.records import FramePart, VidanError
    from workers.ray_executor import RayExecutor

    job = _visual_job(tmp_path, 20.0, "rocket", size=(640, 360))
    ex = RayExecutor(call_timeout_s=0.3)  # far below what decoding 20 s of video takes
    ex.start(Config())
    try:
        h = ex.submit("visual", job)
        (stuck,) = ex._actors["decode"]
        with pytest.raises(VidanError, match="timed out") as err:
            _run(ex, h, 0.2)
        assert err.value.stage == "decode" and "timed out" in err.value.message
        (fresh,) = ex._actors["decode"]
        assert fresh is not stuck and fresh.handle != stuck.handle and stuck.ended is not None
        ex.call_timeout_s = 300
        assert isinstance(_run(ex, ex.submit("visual", job), 0.2), FramePart)
    finally:
        ex.shutdown()


# --- failures inside Ray actors, through the whole pipeline -----------------------------------


class _Poisoned:
    """Takes the place of a stage call's argument: unpickling it, in the actor, runs
    ``fn(*args)`` before the stage ever starts."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _sabotaged(faults: dict, **kw):
    """The real Ray executor, except that visual calls for the files named in ``faults``
    carry a poisoned argument. Why: no real file makes vidan's actor itself die or hang
    (decoders run in an isolated child that turns their crashes and hangs into
    MediaErrors), yet the executor must cope when an actor does, as on an OOM kill."""
    from vidan.stages import VISUAL
    from workers.ray_executor import RayExecutor

    class Sabotaged(RayExecutor):
        def submit(self, kind, item):
            poison = faults.get(os.path.basename(getattr(item, "path", "")))
            if kind == VISUAL and poison is not None:
                item = poison
            return super().submit(kind, item)

    return Sabotaged(**kw)


@pytest.fixture(scope="module")
def targets():
    """tests/isolate_targets.py, sent to Ray workers by value (they cannot import tests/)."""
    import ray.cloudpickle

    import isolate_targets

    ray.cloudpickle.register_pickle_by_value(isolate_targets)
    yield isolate_targets
    ray.cloudpickle.unregister_pickle_by_value(isolate_targets)


def _rows(out):
    import vidan

    videos = vidan.load_report(out).videos
    return {os.path.basename(p): r for p, r in zip(videos.path, videos.itertuples())}


def test_media_error_and_dying_worker_in_ray_fail_only_their_file(ray_local, targets, tmp_path):
    from broken_media import ts_without_sps
    from vidan import synth
    from vidan.config import Config
    from vidan.pipeline import run
    from vidan.synth import Scene
    from workers.ray_executor import MAX_TASK_RETRIES

    src = tmp_path / "in"
    src.mkdir()
    speech = synth.concat_audio(tmp_path / "speech.wav", [(0.2, synth.speech_clip("cat"))])
    synth.write_video(src / "good.mp4", [Scene(3.0, synth.photo("chelsea"))], size=(160, 120), audio=speech)
    ts_without_sps(src / "corrupt.ts")  # a real MediaError, raised inside the visual actor
    synth.write_video(src / "killer.mp4", [Scene(1.0, (30, 30, 200))], size=(160, 120))
    tries = tmp_path / "tries"
    ex = _sabotaged({"killer.mp4": _Poisoned(targets.die_noting, str(tries))})
    run([src], tmp_path / "out", Config(), ex, progress=False)
    # the default deadline leaves the decoder's own time limit to fire first, with its clearer message
    assert ex.call_timeout_s > Config().limits.file_timeout_s

    rows = _rows(tmp_path / "out")
    assert sorted(rows) == ["corrupt.ts", "good.mp4", "killer.mp4"]
    good, corrupt, killer = rows["good.mp4"], rows["corrupt.ts"], rows["killer.mp4"]
    assert good.status == "ok", (good.error_stage, good.error_message, list(good.notes))
    assert (corrupt.status, corrupt.error_stage, corrupt.error_message) == (
        "failed", "decode", "video stream has no picture size")
    assert (killer.status, killer.error_stage) == ("failed", "decode")
    assert killer.error_message.startswith("worker process died: "), killer.error_message
    # tried once and retried a bounded number of times, each try on a fresh worker (Ray's
    # retries, then, when the last one found the worker unreachable, the chain once more)
    pids = tries.read_text().split()
    assert MAX_TASK_RETRIES + 1 <= len(pids) <= 2 * (MAX_TASK_RETRIES + 1) and len(set(pids)) == len(pids)


def test_a_call_stuck_in_a_ray_actor_fails_its_file_at_the_deadline(ray_local, targets, tmp_path):
    from vidan import synth
    from vidan.config import Config
    from vidan.pipeline import run
    from vidan.synth import Scene

    src = tmp_path / "in"
    src.mkdir()
    synth.write_video(src / "a_good.mp4", [Scene(1.0, synth.photo("coffee"))], size=(160, 120))
    synth.write_video(src / "b_stuck.mp4", [Scene(1.0, synth.photo("rocket"))], size=(160, 120))
    # long enough for a real call on a busy machine; the stuck one would wait an hour
    ex = _sabotaged({"b_stuck.mp4": _Poisoned(targets.stall, 3600.0)}, call_timeout_s=20.0)
    t0 = time.monotonic()
    run([src], tmp_path / "out", Config(), ex, progress=False)
    assert time.monotonic() - t0 < 300

    rows = _rows(tmp_path / "out")
    good, stuck = rows["a_good.mp4"], rows["b_stuck.mp4"]
    assert good.status == "ok", (good.error_stage, good.error_message, list(good.notes))
    assert (stuck.status, stuck.error_stage, stuck.error_message) == (
        "failed", "decode", "timed out: still running after 20 s; the call was cancelled and its worker replaced")


def test_stopping_an_embedded_ray_ends_its_processes_quietly_and_it_can_start_again(tmp_path):
    """``stop_ray`` kills Ray's autoscaler monitor before ``ray.shutdown`` (which would
    wait a second for it): every process Ray started must still end, the driver must hear
    no complaint from the monitor, and a notebook that runs again gets a new Ray."""
    import json
    import sys

    from log_guard import check_stderr
    from orchestrate import run_script

    script = """if True:
        import json, psutil, ray
        from workers.connect import init_ray, stop_ray

        def ray_children():
            return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]

        seen = []
        for attempt in range(2):
            assert init_ray(num_cpus=1) and ray.is_initialized()
            kids = ray_children()
            names = [" ".join(p.cmdline()) for p in kids]
            assert ray.get(ray.remote(lambda: 2).remote()) == 2
            stop_ray()
            left = [n for p, n in zip(kids, names) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            seen.append({"started": names, "left": left, "initialized": ray.is_initialized()})
        print(json.dumps(seen))
    """
    proc = run_script([sys.executable, "-c", script], timeout=240, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_stderr(proc.stderr, what="stop_ray")
    assert "autoscaler failed" not in proc.stderr and "Terminated with signal" not in proc.stderr, proc.stderr
    for run in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert any("monitor.py" in n for n in run["started"]) and any("raylet" in n for n in run["started"])
        assert run["left"] == [] and not run["initialized"]


def test_a_video_finished_before_the_finish_actor_answered_still_names_every_model(ray_local):
    """The driver reads model ids as actors load, not at start. A video can be sent to be
    finished while the finishing actor is still loading (a busy machine): its segment
    rows and its video row must name the text model all the same."""
    import numpy as np

    from vidan.assemble import VideoParts
    from vidan.config import Config
    from vidan.records import FramePart, MediaInfo, Span, StreamInfo
    from vidan.stages import FinishJob
    from vidan.stages.finish import FinishStage
    from vidan.stages.registry import FINISH_CHAIN
    from workers.ray_executor import RayExecutor

    info = MediaInfo(path="/v.mp4", size_bytes=1, container="mp4", duration_s=4.0, start_time_s=0.0,
                     streams=(StreamInfo(0, "video", "h264"),))
    probs = np.full((4, 1000), 1e-3, np.float32)
    probs[:, 7] = 0.9
    frames = FramePart(span=Span(0.0, 4.0), times_s=np.arange(4) + 0.5, probs=probs, cuts=[], backend="pyav",
                       frames_decoded=100, frames_sampled=4)
    parts = VideoParts(info, frames=[frames])
    ex = RayExecutor()
    # no re-plan while the test waits: with no work left it would retire the idle actors,
    # one maybe before it has loaded (a slow machine), and its models would go unnamed
    ids = ex.start(Config().replace(workers={"replan_s": 600.0}))
    try:
        assert "text" not in ids  # sent before the finishing actor has loaded, as on a busy machine
        assert not ex.models_known()  # so no commit goes out yet (pipeline._Committer.ready)
        rows, _ = _run(ex, ex.submit(FINISH_CHAIN, FinishJob("v", "/v.mp4", parts, {"models": ids})), 120)
        own = FinishStage(Config(), device="cpu").model_ids()
        assert rows and all({k: r["models"].get(k) for k in own} == own for r in rows)
        assert {k: ids.get(k) for k in own} == own  # what the driver writes in the video's row
        # the speech actor ran no call: its id comes in as it loads, and commits wait for it
        deadline = time.monotonic() + 120
        while not ex.models_known():
            assert time.monotonic() < deadline, "actors did not all load in 120 s"
            ex.wait(timeout=0.5)
        assert {"asr", "vision", "faces", "people", "sound_events", "text"} <= {k for k, v in ids.items() if v}
    finally:
        ex.shutdown()


def test_stopping_ray_after_joining_a_cluster_leaves_the_cluster_running(tmp_path):
    """``stop_ray`` kills the autoscaler monitor only of a Ray this process started: a
    driver that joined a cluster (``--address``, a Ray job on the head) must leave the
    cluster's own monitor, the one that starts its GPU nodes, running."""
    import json
    import sys

    from log_guard import check_stderr
    from orchestrate import run_script

    script = """if True:
        import json, psutil
        from ray.cluster_utils import Cluster
        from workers.connect import init_ray, stop_ray

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
        try:
            kids = [p for p in psutil.Process().children(recursive=True)
                    if "autoscaler/_private/monitor.py" in " ".join(p.cmdline())]
            assert init_ray(cluster.address)
            stop_ray()
            print(json.dumps({"monitors": len(kids),
                              "alive": [p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in kids]}))
        finally:
            cluster.shutdown()
    """
    proc = run_script([sys.executable, "-c", script], timeout=240, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_stderr(proc.stderr, what="stop_ray")
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["monitors"] == 1 and seen["alive"] == [True], seen
