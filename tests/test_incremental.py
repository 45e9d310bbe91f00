"""Scheduled runs on a growing folder: only new or changed files are analysed, results
are committed as the run goes, and nothing is ever duplicated.

Real pipeline (in-process executor, real models and ffmpeg); speech recognition is off
where words do not matter, to keep the module quick.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import vidan
from log_guard import check_stderr
from vidan import synth
from vidan.config import Config
from vidan.store import ReportStore
from vidan.synth import Scene

FAST = Config().replace(asr={"backend": "none"}, segments={"plan": "fixed", "window_s": 2.0})
PHOTOS = ["rocket", "coffee", "chelsea", "astronaut", "camera", "hubble_deep_field"]


def _clip(path: Path, photo: str, seconds: float = 2.0, seed: int = 0) -> Path:
    return synth.write_video(path, [Scene(seconds, synth.photo(photo))], size=(160, 120), fps=10, seed=seed)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six short clips, kept as templates: tests copy them into their own folders."""
    d = tmp_path_factory.mktemp("clips")
    return [_clip(d / f"c{i}.mp4", p, seed=i) for i, p in enumerate(PHOTOS)]


def _folder(tmp_path, clips, n):
    d = tmp_path / "videos"
    d.mkdir()
    for c in clips[:n]:
        shutil.copy2(c, d / c.name)
    return d


def _analyze(folder, out, config=FAST, **kw):
    return vidan.analyze(folder, out=out, config=config, executor="local", **kw)


def _once(rep):
    assert rep.videos.video_id.is_unique, rep.videos[["video_id", "path"]]
    assert rep.segments.groupby("video_id").segment_index.apply(lambda s: s.is_unique).all()


def test_second_run_analyses_nothing_and_new_and_copied_files_are_told_apart(tmp_path, clips):
    videos = _folder(tmp_path, clips, 3)
    out = tmp_path / "rep"
    first = _analyze(videos, out)
    assert (first.new, first.ok, first.unchanged) == (3, 3, 0)
    v1 = ReportStore.open(out).latest().version

    again = _analyze(videos, out)
    assert (again.new, again.analysed, again.unchanged, again.commits) == (0, 0, 3, 0)
    assert ReportStore.open(out).latest().version == v1  # nothing to commit

    shutil.copy2(clips[3], videos / "added.mp4")  # a new video
    shutil.copy2(videos / "c0.mp4", videos / "zz copy of c0.mp4")  # same bytes, another name
    third = _analyze(videos, out)
    assert (third.new, third.analysed, third.unchanged) == (1, 1, 3)
    rep = vidan.load_report(out)
    _once(rep)
    assert sorted(Path(p).name for p in rep.videos.path) == ["added.mp4", "c0.mp4", "c1.mp4", "c2.mp4"]
    dup = rep.skipped[rep.skipped.path.str.endswith("zz copy of c0.mp4")]
    assert list(dup.reason) == [f"duplicate of {videos / 'c0.mp4'}"]
    assert [r["counts"]["new"] for r in rep.runs] == [3, 0, 1]


def test_nothing_to_do_starts_no_ray_and_loads_no_model(tmp_path, clips):
    videos = _folder(tmp_path, clips, 1)
    out = tmp_path / "rep"
    _analyze(videos, out)
    code = (f"import sys, vidan\n"
            f"s = vidan.analyze({str(videos)!r}, out={str(out)!r}, config=vidan.Config().replace("
            f"asr={{'backend': 'none'}}, segments={{'plan': 'fixed', 'window_s': 2.0}}))\n"
            f"import ray\n"
            f"print(s.analysed, s.unchanged, ray.is_initialized(), "
            f"[m for m in ('faster_whisper', 'sentence_transformers', 'efficientnet_lite_pytorch') if m in sys.modules])")
    out_line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              check=True).stdout.strip()
    assert out_line == "0 1 False []"


def test_moved_file_keeps_its_rows_with_the_new_path_without_decoding(tmp_path, clips):
    videos = _folder(tmp_path, clips, 2)
    out = tmp_path / "rep"
    _analyze(videos, out)
    before = vidan.load_report(out).segments
    (videos / "sub").mkdir()
    os.rename(videos / "c1.mp4", videos / "sub" / "renamed.mp4")

    class NoDecoding(vidan.pipeline.LocalExecutor):
        def start(self, config):
            raise AssertionError("a moved file must not be analysed again")

    s = vidan.pipeline.run([videos], out, FAST, NoDecoding(), progress=False)
    assert (s.moved, s.analysed, s.new) == (1, 0, 0)
    rep = vidan.load_report(out)
    _once(rep)
    moved = rep.segments[rep.segments.path.str.endswith("renamed.mp4")]
    old = before[before.path.str.endswith("c1.mp4")]
    assert len(moved) == len(old) > 0
    assert np.allclose(np.stack(moved.embedding), np.stack(old.embedding))
    assert not rep.videos.path.str.endswith("c1.mp4").any()


def test_changed_file_and_changed_config_supersede_instead_of_duplicating(tmp_path, clips):
    videos = _folder(tmp_path, clips, 2)
    out = tmp_path / "rep"
    _analyze(videos, out)
    old_ids = set(vidan.load_report(out).videos.video_id)

    # new content at a known path: a new video that replaces the old one's rows
    _clip(videos / "c0.mp4", "camera", seconds=3.0, seed=9)
    s = _analyze(videos, out)
    assert (s.changed, s.analysed, s.unchanged, s.superseded) == (1, 1, 1, 1)
    rep = vidan.load_report(out)
    _once(rep)
    assert len(rep.videos) == 2 and len(set(rep.videos.video_id) - old_ids) == 1

    # a config that changes results (part length included) analyses everything again
    cfg = FAST.replace(limits={"part_s": 1.5})
    s = _analyze(videos, out, cfg)
    assert (s.reanalysed, s.analysed) == (2, 2)
    rep = vidan.load_report(out)
    _once(rep)
    assert len(rep.videos) == 2 and rep.videos.analysis_key.nunique() == 1
    assert set(rep.segments.config_hash) == {cfg.hash()}


def test_failed_files_are_retried_only_when_asked(tmp_path, clips):
    videos = _folder(tmp_path, clips, 1)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    out = tmp_path / "rep"
    s = _analyze(videos, out)
    assert s.failed == 1
    assert _analyze(videos, out).analysed == 0
    s = _analyze(videos, out, retry_failed=True)
    assert (s.retried, s.failed, s.unchanged) == (1, 1, 1)
    _once(vidan.load_report(out))


TAXONOMY = """
name: everyday
version: "2"
classes:
  - label: spaceflight
    prompts: [a rocket launch, a space shuttle, an astronaut]
  - label: hot drinks
    prompts: [a cup of coffee, an espresso, a mug of tea]
"""


def test_vidan_tag_retags_from_stored_embeddings_without_the_videos(tmp_path, clips):
    videos = _folder(tmp_path, clips, 2)  # rocket, coffee
    out = tmp_path / "rep"
    _analyze(videos, out)
    before = vidan.load_report(out).segments
    tax = tmp_path / "tax.yaml"
    tax.write_text(TAXONOMY)
    fresh = tmp_path / "fresh"  # what analysing with the new taxonomy from the start gives
    _analyze(videos, fresh, config=FAST.replace(tags={"taxonomy": str(tax)}))
    shutil.rmtree(videos)  # no video can be opened: tags must come from the report alone
    r = subprocess.run([sys.executable, "-m", "vidan", "tag", "--reports", str(out), "--taxonomy", str(tax)],
                       capture_output=True, text=True, timeout=300)
    check_stderr(r.stderr)
    assert r.returncode == 0, r.stderr
    after = vidan.load_report(out).segments
    assert len(after) == len(before)

    def classes(df, name):
        rows = df[df.path.str.endswith(name)]
        return {t["label"] for tags in rows.tags for t in tags if t["kind"] == "classification"}

    assert classes(after, "c0.mp4") == {"spaceflight"} and classes(after, "c1.mp4") == {"hot drinks"}

    def scored(df):
        df = df.sort_values(["path", "segment_index"])
        return [[(t["label"], round(t["score"], 4)) for t in tags if t["kind"] == "classification"]
                for tags in df.tags]

    # re-tagging weighs the evidence each row stored exactly as analysis weighs it
    assert scored(after) == scored(vidan.load_report(fresh).segments)
    assert not classes(before, "c0.mp4") & {"spaceflight", "hot drinks"}
    # everything but the classification tags is as it was
    assert np.allclose(np.stack(after.sort_values(["path", "segment_index"]).embedding),
                       np.stack(before.sort_values(["path", "segment_index"]).embedding))
    assert after.models.apply(lambda m: m["taxonomy"]).unique().tolist() == ["everyday@2"]


def test_analyze_with_only_a_new_taxonomy_retags_instead_of_analysing(tmp_path, clips):
    videos = _folder(tmp_path, clips, 2)
    out = tmp_path / "rep"
    _analyze(videos, out)
    tax = tmp_path / "tax.yaml"
    tax.write_text(TAXONOMY)

    class NoDecoding(vidan.pipeline.LocalExecutor):
        def start(self, config):
            raise AssertionError("a taxonomy change must not analyse again")

    cfg = FAST.replace(tags={"taxonomy": str(tax)})
    s = vidan.pipeline.run([videos], out, cfg, NoDecoding(), progress=False)
    assert (s.retagged, s.analysed) == (2, 0)
    seg = vidan.load_report(out).segments
    assert {t["label"] for tags in seg.tags for t in tags if t["kind"] == "classification"} <= {
        "spaceflight", "hot drinks"}
    assert seg.tag_key.nunique() == 1


def test_kill_9_mid_run_keeps_committed_videos_and_the_rerun_finishes_exactly_once(tmp_path, clips):
    videos = _folder(tmp_path, clips, 6)
    out = tmp_path / "rep"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("asr: {backend: none}\nsegments: {plan: fixed, window_s: 2}\ncommit: {videos: 1}\n")
    cmd = [sys.executable, "-m", "vidan", "analyze", str(videos), "--out", str(out), "--config", str(cfg),
           "--local", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    commits = out / "_commits"
    while time.monotonic() < deadline and proc.poll() is None:
        if commits.is_dir() and len(list(commits.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rep = vidan.load_report(out)
    _once(rep)
    kept = len(rep.videos)
    assert 2 <= kept < 6
    for f in ReportStore.open(out).latest().all_files():
        pq.read_table(out / f)

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    check_stderr(r.stderr)
    assert r.returncode == 0, r.stderr
    rep = vidan.load_report(out)
    _once(rep)
    assert len(rep.videos) == 6 and rep.runs[-1]["counts"]["new"] == 6 - kept
    assert rep.runs[0]["status"] == "running"  # the killed run's record says it never finished
    # after a finished run the folders hold exactly the committed files
    import pandas as pd

    assert sorted(pd.read_parquet(out / "videos").video_id) == sorted(rep.videos.video_id)


def test_a_second_run_on_the_same_report_gets_a_clear_message(tmp_path, clips):
    videos = _folder(tmp_path, clips, 1)
    out = tmp_path / "rep"
    _analyze(videos, out)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import signal\nfrom vidan.store import ReportStore, make_lock\n"
        f"make_lock(ReportStore.create({str(out)!r}).storage, 'nightly').acquire()\n"
        "print('held', flush=True)\nsignal.pause()\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run([sys.executable, "-m", "vidan", "analyze", str(videos), "--out", str(out), "--local"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2
        assert "another vidan run is writing to" in r.stderr and "run nightly" in r.stderr and "--wait" in r.stderr
        assert "Traceback" not in r.stderr
        waiting = subprocess.Popen([sys.executable, "-m", "vidan", "analyze", str(videos), "--out", str(out),
                                    "--local", "--wait", "--asr", "none", "--segments", "fixed", "--window", "2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None  # queued behind the holder
    finally:
        holder.kill()
        holder.wait()
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert "1 unchanged" in err


def test_a_touched_file_is_read_once_then_trusted_again(tmp_path, clips, monkeypatch):
    videos = _folder(tmp_path, clips, 2)
    out = tmp_path / "rep"
    _analyze(videos, out)
    os.utime(videos / "c0.mp4", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    s = _analyze(videos, out)  # c0 is read (its stat changed), found unchanged, its identity recorded
    assert (s.unchanged, s.analysed) == (2, 0)
    row = vidan.load_report(out).videos.set_index("path").loc[str(videos / "c0.mp4")]
    assert row.mtime_ns == 1_000_000_000_000_000_000

    from vidan.store import keys

    def no_reading(*a, **k):
        raise AssertionError("a file whose stat matches the report must not be read")

    monkeypatch.setattr(keys, "content_hash", no_reading)
    s = _analyze(videos, out)
    assert (s.unchanged, s.analysed) == (2, 0)
    _once(vidan.load_report(out))


def test_a_run_is_on_record_before_its_first_commit(tmp_path, clips, monkeypatch):
    """A run killed right after a commit, before that commit's record update, must still
    be on record as a run that did not finish (seen with kill -9 in test_faults)."""
    from vidan.store import ReportStore

    on_record = []
    commit = ReportStore.commit

    def watched(self, *a, **k):
        on_record.append([(r["run_id"], r["status"]) for r in self.runs()])
        return commit(self, *a, **k)

    monkeypatch.setattr(ReportStore, "commit", watched)
    out = tmp_path / "out"
    summary = _analyze(_folder(tmp_path, clips, 2), out, config=FAST.replace(commit={"videos": 1}))
    assert len(on_record) >= 2 and on_record[0] == [(summary.run_id, "running")]
    assert [(r["run_id"], r["status"]) for r in vidan.load_report(out).runs] == [(summary.run_id, "finished")]


def test_rows_name_every_model_even_when_one_loads_after_the_first_video_is_done(tmp_path, clips):
    """On Ray the driver learns each stage's model ids as its actors load, and a video can
    finish first (a silent one, before any speech was heard): its rows must still name
    every model of the run, and no commit may go out before they are known. The Ray
    timing is played here by an executor whose vision id comes in with the second video."""
    from vidan import pipeline
    from vidan.stages.registry import FINISH_CHAIN

    class LateIds(pipeline.LocalExecutor):
        def start(self, config):
            self.ids = super().start(config)
            self.late = self.ids.pop("vision")
            self.finished = 0
            self.handles = {}
            return self.ids

        def submit(self, chain, item):
            h = super().submit(chain, item)
            self.handles[h] = chain
            return h

        def result(self, handle):
            if self.handles.pop(handle) == FINISH_CHAIN:
                self.finished += 1
                if self.finished == 2:
                    self.ids["vision"] = self.late
            return super().result(handle)

        def models_known(self):
            return "vision" in self.ids

    ex = LateIds()
    out = tmp_path / "out"
    s = pipeline.run([_folder(tmp_path, clips, 3)], out, FAST.replace(commit={"videos": 1}), ex, progress=False)
    rep = vidan.load_report(out)
    assert len(rep.videos) == 3 and len(rep.segments) > 0
    assert (rep.videos.models.map(lambda m: m["vision"]) == ex.late).all()
    assert (rep.segments.models.map(lambda m: m["vision"]) == ex.late).all()
    # the first video's rows waited for the id: two commits for three videos, not three
    assert s.commits == 2
