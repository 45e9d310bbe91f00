"""The stage graph on a multi-node Ray cluster whose nodes advertise fake GPUs.

A real ``ray.cluster_utils.Cluster`` on loopback, in its own process, with CPU-only nodes
and a node that says it has a GPU (Ray schedules declared GPUs as if they existed; the
actors there see no CUDA and run their CPU path). Real models, real files. Checked:
decoders run on the CPU nodes and encoders on the GPU node; encoder batches carry parts
of several videos; a node added mid-run gets work; encoders ask the autoscaler for a GPU
when none is up and wait for it (``workers.gpu_wait_s``); every video is in the report
exactly once.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import vidan
from log_guard import check_stderr
from orchestrate import run_script
from vidan import synth
from vidan.synth import Scene

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ORCHESTRATE = textwrap.dedent("""
    import json, os, sys, time
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    waited_src, grow_src, out1, out2 = sys.argv[1:5]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cpu_node = cluster.add_node(num_cpus=2)
    import ray
    ray.init(address=cluster.address)
    from vidan.config import Config
    from vidan.pipeline import run
    from workers.ray_executor import RayExecutor

    cfg = Config().replace(workers={"replan_s": 0.5, "grow_min_s": 0.0, "gpu_wait_s": 300.0},
                           frames={"sample_fps": 2.0})
    report = {"cpu_nodes": [cpu_node.node_id]}

    class Watched(RayExecutor):
        def __init__(self, key, on_ask=None, on_first_decode=None):
            super().__init__(cluster.address, device="auto")
            self.key, self.on_ask, self.on_first_decode = key, on_ask, on_first_decode

        def _ask_for_gpus(self, n):
            super()._ask_for_gpus(n)
            from ray.experimental.internal_kv import _internal_kv_get
            from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
            asked = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
            report[self.key + "_asked"] = json.loads(asked) if asked else None
            if self.on_ask:
                self.on_ask()

        def _complete(self, call):
            if call.stage == "decode" and self.on_first_decode:
                hook, self.on_first_decode = self.on_first_decode, None
                hook()
            return super()._complete(call)

        def shutdown(self):
            report[self.key] = self.stats()
            report[self.key + "_events"] = [e for _, e in self.events]
            super().shutdown()

    def add_node(**resources):
        # a raylet that is slow to register on a busy machine is given a second chance
        for attempt in range(3):
            try:
                return cluster.add_node(**resources)
            except Exception as e:
                print(f"add_node failed (attempt {attempt + 1}): {e}", file=sys.stderr)
        raise RuntimeError("could not add a node")

    def gpu_comes_up():  # what the autoscaler would do when asked
        report["gpu_node"] = add_node(num_cpus=1, num_gpus=1).node_id

    def node_joins():
        report["joined_node"] = add_node(num_cpus=2).node_id

    run([waited_src], out1, cfg, Watched("waited", on_ask=gpu_comes_up), progress=False)
    run([grow_src], out2, cfg, Watched("grown", on_first_decode=node_joins), progress=False)
    print("REPORT " + json.dumps(report))
    ray.shutdown()
    cluster.shutdown()
""")


def _clips(folder, n, seconds, photos):
    folder.mkdir()
    speech = synth.concat_audio(folder.parent / f"{folder.name}.wav", [(0.3, synth.speech_clip("coffee"))])
    names = []
    for i in range(n):
        # lengths apart: two clips with the same bytes would be one video, the other a
        # duplicate (a photo scene draws no noise, so a seed alone does not set them apart)
        scenes = [Scene(seconds / 2, synth.photo(photos[i % len(photos)])),
                  Scene(seconds / 2 + 0.1 * i, synth.photo(photos[(i + 1) % len(photos)]))]
        synth.write_video(folder / f"clip{i:02d}.mp4", scenes, size=(192, 144), audio=speech if i % 2 == 0 else None)
        names.append(f"clip{i:02d}.mp4")
    return names


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph")
    photos = ["rocket", "coffee", "chelsea", "astronaut"]
    waited = _clips(tmp / "waited", 3, 3.0, photos)
    grown = _clips(tmp / "grown", 12, 4.0, photos)
    proc = run_script([sys.executable, "-c", ORCHESTRATE, str(tmp / "waited"), str(tmp / "grown"),
                       str(tmp / "out1"), str(tmp / "out2")], timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    return json.loads(line[len("REPORT "):]), tmp, waited, grown, proc.stderr


def _once(out, names):
    videos = vidan.load_report(out).videos
    got = sorted(p.rsplit("/", 1)[-1] for p in videos.path)
    assert got == sorted(names)  # each video exactly once
    bad = videos[videos.status != "ok"]
    assert bad.empty, bad[["path", "status", "error_stage", "error_message"]].to_string()


def test_encoders_wait_for_the_gpu_they_asked_the_autoscaler_for(graph_run):
    report, tmp, waited, _, _ = graph_run
    assert report["waited_asked"] == [{"GPU": 1}]
    assert any(e.startswith("asked the autoscaler") for e in report["waited_events"])
    stats = report["waited"]
    for enc in ("vision", "asr"):
        assert set(stats[enc]["calls_by_node"]) == {report["gpu_node"]}, stats[enc]
    # no encoder ever started on the CPU while the GPU was on its way
    started = [slot for e in report["waited_events"] if e.startswith("started ")
               for slot in e[len("started "):].split(", ")]
    assert not [s for s in started if s.split("@")[0] in ("vision", "asr") and s.endswith("/cpu")], started
    assert [s for s in started if s.startswith("vision@") and s.endswith("/cuda")], started
    _once(tmp / "out1", waited)


def test_decoders_on_cpu_nodes_encoders_on_gpu_nodes_and_a_joining_node_gets_work(graph_run):
    report, tmp, _, grown, _ = graph_run
    stats = report["grown"]
    gpu, cpu, joined = report["gpu_node"], report["cpu_nodes"][0], report["joined_node"]
    for enc in ("vision", "asr"):
        assert set(stats[enc]["calls_by_node"]) == {gpu}, stats[enc]
    decode_nodes = {n for n, calls in stats["decode"]["calls_by_node"].items() if calls}
    assert cpu in decode_nodes and gpu not in decode_nodes, stats["decode"]
    joined_calls = sum(stats[s]["calls_by_node"].get(joined, 0) for s in ("decode", "audio"))
    assert joined_calls > 0, (stats["decode"], stats["audio"])
    # encoder calls carry parts of several videos
    assert stats["vision"]["mean_batch"] > 1.0, stats["vision"]
    _once(tmp / "out2", grown)


def test_the_graph_run_logs_no_errors(graph_run):
    check_stderr(graph_run[4])
