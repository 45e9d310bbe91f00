"""The report store's commit protocol, on real parquet files.

Readers see exactly the files of one commit: never a half-written batch, never a video
twice, whatever was killed when, and however many writers raced.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from vidan.report import load_report
from vidan.store import LockedError, NotAReport, ReportStore, make_lock
from vidan.store.manifest import commit_key


def _video(vid, run="r", **kw):
    return {"video_id": vid, "path": f"/x/{vid}.mp4", "status": "ok", "config_hash": "h", "run_id": run, **kw}


def _segments(vid, n, run="r"):
    return [{"video_id": vid, "path": f"/x/{vid}.mp4", "segment_index": i, "start_s": float(i), "end_s": i + 1.0,
             "embedding": [0.5] * 384, "config_hash": "h", "run_id": run} for i in range(n)]


def _add(store, vids, run="r", n=2):
    g = store.write_group([_video(v, run) for v in vids], [s for v in vids for s in _segments(v, n, run)], run)
    return store.commit(add=[g], meta={"run_id": run}, tag=run)


def test_commits_add_and_supersede_without_duplicates(tmp_path):
    store = ReportStore.create(tmp_path / "rep")
    _add(store, ["a", "b"], "r1")
    m, superseded = _add(store, ["b", "c"], "r2", n=3)
    assert superseded == 1 and m.version == 2
    rep = load_report(tmp_path / "rep")
    assert sorted(rep.videos.video_id) == ["a", "b", "c"]
    assert rep.videos.set_index("video_id").run_id.to_dict() == {"a": "r1", "b": "r2", "c": "r2"}
    assert rep.segments.groupby("video_id").size().to_dict() == {"a": 2, "b": 3, "c": 3}
    # the fixed-size embedding type survives the rewrite of the group that held "b"
    assert str(pq.read_schema(tmp_path / "rep" / m.groups[0].segments).field("embedding").type).startswith(
        "fixed_size_list")


def test_readers_see_only_what_the_latest_commit_lists(tmp_path):
    store = ReportStore.create(tmp_path / "rep")
    _add(store, ["a"])
    # a batch written but never committed (a run killed before its commit point)
    store.write_group([_video("zz")], _segments("zz", 4), "dead")
    assert list(load_report(tmp_path / "rep").videos.video_id) == ["a"]


def test_cleanup_deletes_only_unlisted_vidan_part_files(tmp_path):
    store = ReportStore.create(tmp_path / "rep")
    _add(store, ["a", "b"])
    _add(store, ["b"])  # the first group is rewritten: its old files are no longer listed
    mine = tmp_path / "rep" / "segments" / "my-notes.txt"
    mine.write_text("not vidan's")
    before = {p.name for p in (tmp_path / "rep" / "segments").iterdir()}
    removed = store.cleanup(started=time.time() + 1)
    after = {p.name for p in (tmp_path / "rep" / "segments").iterdir()}
    assert removed >= 2 and mine.exists()
    assert after == {os.path.basename(f) for f in store.latest().files("segments")} | {"my-notes.txt"}
    assert before > after
    # now the folder itself reads exactly (no run active, cleanup done)
    assert sorted(pd.read_parquet(tmp_path / "rep" / "videos").video_id) == ["a", "b"]


def test_compaction_merges_small_groups_and_keeps_rows(tmp_path):
    store = ReportStore.create(tmp_path / "rep")
    for i in range(6):
        _add(store, [f"v{i}"])
    assert len(store.latest().groups) == 6
    store.compact(meta={"run_id": "c"}, tag="c")
    assert len(store.latest().groups) == 1
    rep = load_report(tmp_path / "rep")
    assert sorted(rep.videos.video_id) == [f"v{i}" for i in range(6)] and len(rep.segments) == 12


def test_two_writers_racing_never_duplicate(tmp_path):
    ReportStore.create(tmp_path / "rep")
    errors = []

    def writer(name):
        try:
            store = ReportStore.create(tmp_path / "rep")
            for i in range(15):
                # both writers keep replacing the same videos, and add their own
                _add(store, ["shared1", "shared2", f"{name}{i}"], name)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rep = load_report(tmp_path / "rep")
    assert rep.videos.video_id.is_unique and len(rep.videos) == 32
    assert (rep.segments.groupby("video_id").size() == 2).all()
    assert ReportStore.open(tmp_path / "rep").latest().version == 30


KILL_WRITER = textwrap.dedent("""
    import sys
    from vidan.store import ReportStore
    store = ReportStore.create(sys.argv[1])
    i = 0
    while True:
        ids = [f"v{j}" for j in range(i % 7, i % 7 + 5)]
        rows = [{"video_id": v, "path": "/p", "status": "ok", "config_hash": "h", "run_id": str(i)} for v in ids]
        segs = [{"video_id": v, "path": "/p", "segment_index": k, "start_s": 0.0, "end_s": 1.0,
                 "config_hash": "h", "run_id": str(i)} for v in ids for k in range(3)]
        g = store.write_group(rows, segs, "k")
        store.commit(add=[g], meta={"run_id": str(i)}, tag="k")
        if i % 5 == 0:
            store.compact(meta={"run_id": "c"}, tag="k")
        i += 1
        print(i, flush=True)
""")


def test_kill_9_at_random_moments_leaves_a_consistent_report(tmp_path):
    rep_dir = tmp_path / "rep"
    rng = random.Random(7)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(rep_dir)], stdout=subprocess.PIPE)
        proc.stdout.readline()  # at least one commit made by this writer
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rep = load_report(rep_dir)
        # every video exactly once, each with its 3 segments, all from one commit of a writer
        assert rep.videos.video_id.is_unique
        assert (rep.segments.groupby("video_id").size() == 3).all()
        assert set(rep.segments.video_id) == set(rep.videos.video_id)
        for f in ReportStore.open(rep_dir).latest().all_files():
            pq.read_table(rep_dir / f)  # every listed file is whole
    store = ReportStore.create(rep_dir)
    store.cleanup(started=time.time() + 1)
    assert sorted(pd.read_parquet(rep_dir / "videos").video_id) == sorted(load_report(rep_dir).videos.video_id)


def test_a_folder_vidan_did_not_make_is_refused(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotAReport, match="not empty and is not a vidan report"):
        ReportStore.create(tmp_path)
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == b"x" * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "videos"]
    # an empty folder is fine, and becomes vidan's
    (tmp_path / "empty").mkdir()
    ReportStore.create(tmp_path / "empty")
    assert json.loads((tmp_path / "empty" / "_vidan").read_text())["format"] == "vidan-report"


def test_one_writer_at_a_time_and_the_lock_dies_with_its_process(tmp_path):
    store = ReportStore.create(tmp_path / "rep")
    code = textwrap.dedent(f"""
        import os, signal
        from vidan.store import ReportStore, make_lock
        s = ReportStore.create({str(tmp_path / 'rep')!r})
        make_lock(s.storage, "holder").acquire()
        print("locked", flush=True)
        signal.pause()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=r"another vidan run is writing .*run holder"):
            make_lock(store.storage, "second").acquire()
    finally:
        proc.kill()
        proc.wait()
    lock = make_lock(store.storage, "third")
    lock.acquire(wait=True, timeout_s=10)  # the killed holder's lock is gone
    lock.release()


def test_a_commit_never_overwrites_an_existing_version(tmp_path):
    store = ReportStore.create(tmp_path / "rep")
    _add(store, ["a"])
    first = (tmp_path / "rep" / commit_key(1)).read_bytes()
    assert store.storage.create(commit_key(1), b"{}") is False
    assert (tmp_path / "rep" / commit_key(1)).read_bytes() == first
