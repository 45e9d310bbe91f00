"""Transport streams joined end to end (``cat a.ts b.ts``): the clock restarts where the
second recording begins, and both recordings are analysed, on one continuous clock.

Real ffmpeg and PyAV make the recordings (pictures and bundled speech); the pipeline
runs in-process and on an embedded Ray, in parts; the report is read back with pandas.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vidan
from orchestrate import run_script
from vidan import synth
from vidan.config import Config
from vidan.media.probe import probe
from vidan.media.timeline import clock_jumps
from vidan.synth import Scene
from vidan.thumbnails import read_frame

REC_S = 12.0
RED, BLUE = (200, 40, 40), (40, 60, 210)


def _recording(path: Path, colour, speech: str, speech_at: float, fps: int = 25) -> Path:
    """REC_S of one colour, with sound all the way through and a sentence at ``speech_at``."""
    rate = 16000
    said = synth.read_audio(synth.speech_clip(speech), rate)
    track = np.zeros(int(REC_S * rate), np.float32)
    track[int(speech_at * rate):int(speech_at * rate) + len(said)] = said
    wav = path.with_suffix(".wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(track, -1, 1) * 32767).astype("<i2").tobytes())
    synth.write_video(path, [Scene(REC_S, colour)], fps=fps, size=(320, 240), audio=wav, gop=fps)
    wav.unlink()
    return path


@pytest.fixture(scope="module", autouse=True)
def own_scratch(tmp_path_factory):
    """The copies (kept by thumbnails for the next picture) go to this module's own scratch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDAN_SCRATCH", str(tmp_path_factory.mktemp("scratch")))
        yield


def _frame_steps(path: Path) -> set:
    import av

    with av.open(str(path)) as c:
        times = [f.time for f in c.decode(c.streams.video[0])]
    return {round(b - a, 3) for a, b in zip(times, times[1:])}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("timeline")
    a = _recording(d / "a.ts", RED, "coffee", 1.0)
    b = _recording(d / "b.ts", BLUE, "cat", 2.0)
    out = {"a": a, "b": b}
    for kind in ("ts", "mpg"):
        if kind == "mpg":  # a program stream (DVD, old capture cards): MPEG-2 video, MP2 sound
            for rec in (a, b):
                # passthrough: ffmpeg's constant-rate mode duplicated frames near the start
                # of some recordings, a fault of the file that vidan rightly reported
                synth.run_ffmpeg(["-i", rec, "-c:v", "mpeg2video", "-q:v", "3", "-g", "25", "-fps_mode", "passthrough",
                                  "-c:a", "mp2", rec.with_suffix(".mpg")])
        parts = [rec.with_suffix("." + kind) for rec in (a, b)]
        for rec in parts:  # each recording alone is clean: whatever the test finds comes of joining them
            assert _frame_steps(rec) == {0.04}, (rec, _frame_steps(rec))
        folder = d / f"in-{kind}"
        folder.mkdir()
        # a name that is not UTF-8, with a space: the copy's scratch name is hashed from it
        joined = folder / os.fsdecode(b"joined \xff." + kind.encode())
        joined.write_bytes(b"".join(p.read_bytes() for p in parts))  # what `cat a.ts b.ts` makes
        out[kind] = joined
    return out


def test_the_restart_is_found_from_packets_and_nowhere_else(media, tmp_path):
    for kind, container in (("ts", "mpegts"), ("mpg", "mpeg")):
        jumps = clock_jumps(str(media[kind]))
        assert len(jumps) == 1 and abs(jumps[0] - REC_S) < 0.1, (kind, jumps)
        info = probe(media[kind])
        assert info.clock_jumps == jumps and info.container == container
    assert clock_jumps(str(media["a"])) == ()
    # both recordings' pictures on one clock: no jump, in TS or anywhere else
    for suffix in (".mp4", ".ts"):
        one = tmp_path / ("one" + suffix)
        synth.run_ffmpeg(["-i", media["ts"], "-c", "copy", one])
        assert clock_jumps(str(one)) == (), suffix


@pytest.mark.parametrize("kind,executor", [("ts", "local"), ("ts", "ray"), ("mpg", "local")])
def test_joined_recordings_are_analysed_whole_on_one_clock(media, tmp_path, kind, executor):
    out = tmp_path / "out"
    # parts of 10 s: the stages of every part read the same copy
    cfg = Config().replace(asr={"language": "en"}, limits={"part_s": 10.0})
    vidan.analyze([media[kind].parent], out, config=cfg, executor=executor, num_cpus=2)
    v = pd.read_parquet(out / "videos").iloc[0]
    s = pd.read_parquet(out / "segments").sort_values("start_s")

    assert v["status"] == "ok", list(v["notes"])
    said = re.match(r"the file's clock restarts at ([0-9.]+) s \(recordings joined end to end\)", v["notes"][0])
    assert said and abs(float(said[1]) - REC_S) <= 0.1, v["notes"][0]
    assert abs(v["duration_s"] - 2 * REC_S) < 0.2
    assert v["frames_decoded"] >= 2 * REC_S * 25 - 2
    assert abs(v["audio_decoded_s"] - 2 * REC_S) < 0.2
    # the second recording's picture starts where the first one's ends
    cuts = [c["t_s"] for c in v["shot_cuts"]]
    assert any(abs(t - REC_S) < 0.2 for t in cuts), cuts
    # each recording's sentence, at its own place on the one clock
    words = [w for ws in s["words"] for w in ws]
    for name, start, lo, hi in (("coffee", 1.0, 0.0, REC_S), ("cat", 2.0, REC_S, 2 * REC_S)):
        first = synth.speech_text(name).split()[0].strip(".,").lower()
        at = [w["start_s"] for w in words if w["text"].strip(" .,").lower() == first and lo <= w["start_s"] < hi]
        assert at and abs(at[0] - (lo + start)) < 1.0, (name, [(w["text"], w["start_s"]) for w in words])
    # a thumbnail at a report time shows what was on screen then
    for t, colour in ((REC_S / 2, RED), (REC_S * 1.5, BLUE)):
        img = read_frame(str(media[kind]), t, v["start_time_s"])
        assert np.abs(img.reshape(-1, 3).mean(axis=0) - colour).max() < 25, (t, img.reshape(-1, 3).mean(axis=0))


def test_without_scratch_space_the_file_is_analysed_as_it_is(media, tmp_path, monkeypatch, caplog):
    """No room for the copy (here VIDAN_SCRATCH names a file): the run goes on, the log
    says why, and the file gives what it gave before: its first recording, partial."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("VIDAN_SCRATCH", str(blocker / "scratch"))
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="vidan"):
        s = vidan.analyze([media["ts"].parent], out, config=Config().replace(asr={"backend": "none"}),
                          executor="local")
    assert (s.partial, s.failed) == (1, 0), s.line()
    v = pd.read_parquet(out / "videos").iloc[0]
    assert abs(v["duration_s"] - REC_S) < 0.2
    assert any("out-of-order timestamps" in n for n in v["notes"]), list(v["notes"])
    assert any("clock restarts" in r.getMessage() and "analysing it as it is" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


CLUSTER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from ray.cluster_utils import Cluster

    folder, out, driver, *nodes = sys.argv[1:]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for scratch in nodes:  # each node's own disk: what its workers see as VIDAN_SCRATCH
        cluster.add_node(num_cpus=2, env_vars={"VIDAN_SCRATCH": scratch})
    os.environ["VIDAN_SCRATCH"] = driver
    import vidan
    from vidan.config import Config

    cfg = Config().replace(asr={"language": "en"}, limits={"part_s": 10.0})
    summary = vidan.analyze([folder], out, config=cfg, address=cluster.address)
    print(json.dumps({"ok": summary.ok}))
""")


@pytest.mark.ray
@pytest.mark.slow
def test_every_node_removes_the_copies_its_stages_made(media, tmp_path):
    """On a cluster each node that reads a joined file makes its own copy on one clock (an
    object-storage input likewise): the run removes them all, not only the driver's."""
    driver, nodes = tmp_path / "driver", [tmp_path / "node1", tmp_path / "node2"]
    out = tmp_path / "out"
    done = run_script([sys.executable, "-c", CLUSTER, str(media["ts"].parent), str(out), str(driver),
                       *map(str, nodes)], timeout=400, cwd=str(Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"ok": 1}, done.stderr[-4000:]
    assert pd.read_parquet(out / "videos").iloc[0]["status"] == "ok"
    # the stages ran on the nodes and copied the file there (scratch is made for a copy)
    assert any(d.is_dir() for d in nodes), [str(d) for d in nodes]
    left = {str(d): sorted(p.name for p in d.iterdir()) for d in (driver, *nodes) if d.is_dir()}
    assert not any(left.values()), left
