"""The driver: plan -> schedule -> collect -> commit.

* plan: open the report, discover the inputs, and decide against what the report holds
  what this run must do (``vidan.incremental``): usually only new or changed files.
* schedule: each video's parts go to the visual and audio stages, then to finish.
* collect: part results come back in any order; a video whose parts are all in is
  finished into rows.
* commit: rows are committed in batches as the run goes (``vidan.store``), so a run
  killed at any moment keeps every batch it committed.

*Where* each stage runs is the executor's business (``vidan.executor``, ``workers/``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from vidan import __version__
from vidan.assemble import VideoParts
from vidan.config import Config
from vidan.executor import Executor, LocalExecutor  # noqa: F401  (LocalExecutor: re-exported)
from vidan.progress import Progress
from vidan.records import (FAILED, OK, PARTIAL, STAGE_DISCOVER, STAGE_PROBE, AudioPart, FramePart,
                           MediaError, MediaInfo, VidanError)
from vidan.rows import video_row
from vidan.segments import plan_parts
from vidan.stages import AUDIO, FINISH, VISUAL, FinishJob, PartJob
from vidan.store import ReportStore, make_lock
from vidan.store.storage import LocalStorage

log = logging.getLogger("vidan")

@dataclass
class RunSummary:
    out: "Path | str"  # a local report folder, or the URI of one in object storage
    run_id: str
    files: int = 0  # files found that are videos (or were named), this run
    ok: int = 0  # of the videos analysed this run
    partial: int = 0
    failed: int = 0
    skipped: int = 0
    segments: int = 0
    seconds: float = 0.0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    retried: int = 0
    reanalysed: int = 0
    moved: int = 0
    retagged: int = 0
    superseded: int = 0
    commits: int = 0
    version: int = 0  # the report's commit after this run
    record: Optional[str] = None

    @property
    def analysed(self) -> int:
        return self.ok + self.partial + self.failed

    @property
    def exit_code(self) -> int:
        """0: every file analysed this run is ok; 1: finished, some failed or partial."""
        return 0 if (self.failed == 0 and self.partial == 0) else 1

    def line(self) -> str:
        parts = [f"{self.files} file(s): {self.new} new, {self.changed} changed, {self.unchanged} unchanged"]
        for name, n in (("retried", self.retried), ("re-analysed", self.reanalysed), ("moved", self.moved),
                        ("re-tagged", self.retagged), ("superseded", self.superseded)):
            if n:
                parts.append(f"{n} {name}")
        done = (f"analysed {self.analysed}: {self.ok} ok, {self.partial} partial, {self.failed} failed"
                if self.analysed else "nothing to analyse")
        return (", ".join(parts) + f"; {done}; {self.skipped} skipped; {self.segments} segments; "
                f"{self.commits} commit(s), report v{self.version}, {self.seconds:.1f} s")


@dataclass
class _Video:
    video_id: str
    path: str
    info: MediaInfo
    parts: VideoParts
    pending: int = 0
    errors: list[VidanError] = field(default_factory=list)
    submitted: dict[str, int] = field(default_factory=dict)
    failed_kinds: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    stat: Optional[tuple[int, int]] = None  # (size, mtime_ns) when its work was queued
    identity: dict = field(default_factory=dict)  # mtime_ns and inode, for the next run's identity check


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class _Committer:
    """Collects finished videos and commits them in batches, keeping the run's record current."""

    def __init__(self, store: ReportStore, meta: dict, record: dict, summary: RunSummary,
                 every_videos: int, every_s: float):
        self.store, self.meta, self.record, self.summary = store, meta, record, summary
        self.run_id = meta["run_id"]
        self.every_videos, self.every_s = every_videos, every_s
        self.videos: list[dict] = []
        self.segments: list[dict] = []
        self.drop: set[str] = set()
        self.skipped: Optional[list[dict]] = None  # this run's skipped list, when it differs
        self.stored: set[str] = set()  # ids the report held before the run
        self.last = time.monotonic()
        # whether the rows' provenance is complete: a commit due before then waits for it
        self.ready: Callable[[], bool] = lambda: True

    def add(self, row: dict, segments: list[dict], drop: Optional[str] = None) -> None:
        self.videos.append(row)
        self.segments.extend(segments)
        if drop:
            self.drop.add(drop)
        due = len(self.videos) >= self.every_videos or time.monotonic() - self.last >= self.every_s
        if due and self.ready():
            self.flush()

    def flush(self, rewrite=None, change: Optional[dict] = None) -> None:
        if not self.videos and self.skipped is None and rewrite is None and not self.drop:
            return
        add = [self.store.write_group(self.videos, self.segments, self.run_id)] if self.videos else []
        skipped = self.store.write_skipped(self.skipped, self.run_id) if self.skipped is not None else None
        change = {"videos": len(self.videos), "segments": len(self.segments), **(change or {})}
        m, superseded = self.store.commit(add=add, drop=self.drop, skipped=skipped, rewrite=rewrite,
                                          tag=self.run_id, meta={**self.meta, "change": change})
        # a video analysed again replaces its own rows: only other ids count as superseded
        self.summary.superseded += superseded - sum(1 for r in self.videos if r["video_id"] in self.stored)
        self.summary.commits += 1
        self.summary.version = m.version
        self.videos, self.segments, self.drop, self.skipped = [], [], set(), None
        self.last = time.monotonic()
        self.save_record("running")

    def save_record(self, status: str) -> None:
        s = self.summary
        self.record.update({
            "status": status, "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commits": s.commits, "version": s.version,
            "counts": {k: getattr(s, k) for k in ("files", "new", "changed", "unchanged", "retried", "reanalysed",
                                                   "moved", "retagged", "superseded", "ok", "partial", "failed",
                                                   "skipped", "segments")},
        })
        self.store.put_run(self.record)


def run(paths: Sequence[str | os.PathLike], out: str | os.PathLike, config: Config, executor: Executor, *,
        progress: bool = True, retry_failed: bool = False, reprocess: bool = False, wait: bool = False,
        device: str = "auto", storage_options: Optional[dict] = None) -> RunSummary:
    """Analyse what is new or changed under ``paths`` into the report at ``out``."""
    from vidan.store.keys import analysis_key, device_class, tag_key

    t0 = time.perf_counter()
    run_id = new_run_id()
    try:
        store = ReportStore.create(out, storage_options)  # refuses a place vidan does not own, before any work
        lock = make_lock(store.storage, run_id)
        lock.acquire(wait=wait)
    except BaseException:
        executor.shutdown()
        raise
    started_wall = time.time()
    summary = RunSummary(out=Path(store.uri) if isinstance(store.storage, LocalStorage) else store.uri, run_id=run_id)
    keys = {"analysis_key": analysis_key(config, device_class(device)), "tag_key": tag_key(config)}
    record = {"run_id": run_id, "started_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
              "host": socket.gethostname(), "vidan_version": __version__,
              "inputs": [_disp(os.fsdecode(p)) for p in paths], "config": config.to_dict(),
              "config_hash": config.hash(), **keys, "options": {"retry_failed": retry_failed, "reprocess": reprocess}}
    committer = _Committer(store, {"run_id": run_id, "vidan_version": __version__, **keys}, record, summary,
                           config.commit.videos, config.commit.seconds)
    try:
        # on record before anything is committed: a run killed between its first commit and
        # that commit's record update still shows as a run that did not finish
        committer.save_record("running")
        work, found, probes, stored = _plan(paths, store, keys, summary, retry_failed, reprocess, storage_options)
        committer.stored = {s.video_id for s in stored}
        committer.skipped = _skipped_rows(found, run_id, store)
        _carry_moved(work, store, committer)
        if work.analyse:
            _schedule_and_collect(work, probes, config, executor, committer, summary, keys, run_id, progress,
                                  storage_options)
        committer.flush()
        if work.retag:
            from vidan.retag import retag_report

            summary.retagged = retag_report(store, config, keys["tag_key"], committer=committer, device=device)
        _forget_scratch(work, probes, executor)
        store.compact(meta={**committer.meta, "change": {"compacted": 1}}, tag=run_id)
        store.cleanup(started=started_wall)
        summary.version = store.latest().version
        summary.seconds = time.perf_counter() - t0
        record["seconds"] = round(summary.seconds, 3)
        committer.save_record("finished")
        summary.record = f"{store.uri}/_runs/{run_id}.json"
        return summary
    finally:
        executor.shutdown()
        lock.release()


def _plan(paths, store: ReportStore, keys: dict, summary: RunSummary, retry_failed: bool, reprocess: bool,
          storage_options: Optional[dict] = None):
    from vidan.discover import discover
    from vidan.incremental import Stored, identity_index, plan_work

    cols = ["video_id", "path", "status", "analysis_key", "tag_key", "size_bytes", "mtime_ns", "inode", "etag"]
    stored = [Stored(**r) for r in store.read_table("videos", cols).to_pylist()]
    found, probes = discover(paths, known=identity_index(stored), storage_options=storage_options)
    work = plan_work(found.candidates, stored, analysis_key=keys["analysis_key"], tag_key=keys["tag_key"],
                     retry_failed=retry_failed, reprocess=reprocess, present_paths=[s.path for s in found.skipped])
    summary.files = len(found.candidates)
    summary.skipped = len(found.skipped)
    summary.unchanged = len(work.unchanged)
    summary.moved = len(work.moved)
    summary.new = work.count("new")
    summary.changed = work.count("changed")
    summary.retried = work.count("retry")
    summary.reanalysed = work.count("reanalyse") + work.count("reprocess")
    missing = [c for c in work.analyse if c.path not in probes and not c.error]
    if missing:  # known files analysed again (new config, retry): probe them now
        from contextlib import ExitStack

        from vidan.media.isolate import probe_isolated
        from vidan.sources import local_copy

        with ExitStack() as stack:
            local = [stack.enter_context(local_copy(c.path, c.etag or "", storage_options, c.size_bytes))
                     for c in missing]
            probes.update(zip([c.path for c in missing], probe_isolated(local)))
    _on_one_clock(work.analyse, probes, storage_options)
    return work, found, probes, stored


def _on_one_clock(candidates, probes: dict, storage_options: Optional[dict]) -> None:
    """A file whose clock restarts is described as its copy on one clock, which is what
    the stages decode (``PartJob.local``): durations, start and stream ends are the copy's.
    The copy is made here once and kept in this node's scratch for the stages."""
    from vidan.media.isolate import probe_isolated
    from vidan.sources import local_copy

    for c in candidates:
        info = probes.get(c.path)
        if not isinstance(info, MediaInfo) or not info.clock_jumps:
            continue
        try:
            with local_copy(c.path, c.etag or "", storage_options, info.size_bytes, continuous=True) as copy:
                [copied] = probe_isolated([copy])
            if not isinstance(copied, MediaInfo):
                raise copied
        except (VidanError, OSError) as e:  # OSError: scratch space full, or not writable
            # the file as it is still gives its first recording (partial, with the frames
            # it could not place): better than nothing, and the log says why
            # escaped as the report escapes names: a raw one that is not UTF-8 would break a
            # UTF-8 log (or pytest-xdist)
            why = _disp(str(getattr(e, "message", None) or e))
            log.warning("%s: its clock restarts, but %s; analysing it as it is", _disp(c.path), why)
            probes[c.path] = replace(info, clock_jumps=())
            continue
        probes[c.path] = replace(copied, path=info.path, size_bytes=info.size_bytes, container=info.container,
                                 clock_jumps=info.clock_jumps)


def _forget_scratch(work, probes: dict, executor: Executor) -> None:
    """Scratch copies (of object-storage inputs, and of files put on one clock) go when
    the run ends: this node's, and those the stages made on the nodes they ran on."""
    from vidan.sources import forget, is_remote

    for c in work.analyse:
        forget(c.path, c.etag or "")
    # only inputs that were copied somewhere: asking every node costs a worker process each
    copied = [(c.path, c.etag or "") for c in work.analyse if is_remote(c.path) or (
        isinstance(probes.get(c.path), MediaInfo) and probes[c.path].clock_jumps)]
    if not copied:
        return
    forget_elsewhere = getattr(executor, "forget_scratch", None)  # (an executor of the user's may lack it)
    if forget_elsewhere is not None:
        forget_elsewhere(copied)


def _skipped_rows(found, run_id: str, store: ReportStore) -> Optional[list[dict]]:
    """This run's skipped list, or None when it equals the committed one (nothing to commit)."""
    rows = [{"path": _disp(s.path), "reason": s.reason, "run_id": run_id} for s in found.skipped]
    before = store.read_table("skipped", ["path", "reason"]).to_pylist()
    if sorted((r["path"], r["reason"]) for r in rows) == sorted((r["path"], r["reason"]) for r in before):
        return None
    return rows


def _carry_moved(work, store: ReportStore, committer: _Committer) -> None:
    """Rows of files that moved are rewritten with their new path (and of touched files with
    their new mtime and inode); nothing is decoded."""
    if not work.moved and not work.refresh:
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    by_id = {c.video_id: c for c, _ in work.moved + work.refresh}
    ids = pa.array(sorted(by_id), pa.string())
    m = store.latest()
    vt = store.read_table("videos", manifest=m)
    st = store.read_table("segments", manifest=m)
    segs: dict[str, list[dict]] = {}
    for r in st.filter(pc.is_in(st.column("video_id"), value_set=ids)).to_pylist():
        r["path"] = _disp(by_id[r["video_id"]].path)
        segs.setdefault(r["video_id"], []).append(r)
    for r in vt.filter(pc.is_in(vt.column("video_id"), value_set=ids)).to_pylist():
        c = by_id[r["video_id"]]
        r.update(path=_disp(c.path), mtime_ns=c.mtime_ns, inode=c.inode, etag=c.etag, size_bytes=c.size_bytes)
        committer.add(r, segs.get(r["video_id"], []))


def _schedule_and_collect(work, probes: dict, config: Config, executor: Executor, committer: _Committer,
                          summary: RunSummary, keys: dict, run_id: str, progress: bool,
                          storage_options: Optional[dict] = None) -> None:
    bar = Progress(len(work.analyse), enabled=progress)
    models = executor.start(config)
    committer.ready = executor.models_known
    bar.started()
    prov = {"config_hash": config.hash(), "models": models, "run_id": run_id, **keys}
    cfg_json = config.to_json()

    def emit(row: dict, segments: list[dict]) -> None:
        # Every row names the run's models, whichever finished first: a video finished
        # before another stage's worker had loaded (a silent one, before any speech was
        # heard) would otherwise name no model for that stage. Rows share the dict the
        # executor fills as workers load, and are committed once it is complete.
        for s in segments:
            for k, v in s["models"].items():
                if models.get(k) is None and v is not None:
                    models[k] = v  # the finishing stage's own, named by the process that used them
            s["models"] = models
        committer.add(row, segments, drop=work.supersede.get(row["video_id"]))
        summary.segments += len(segments)
        status = row["status"]
        setattr(summary, status, getattr(summary, status) + 1)
        bar.update(status)

    handles: dict[Any, tuple[str, str]] = {}
    videos: dict[str, _Video] = {}
    for cand in work.analyse:
        v = _schedule(cand, probes.get(cand.path), config, executor, handles, bar, storage_options)
        if isinstance(v, VidanError):
            info = probes.get(cand.path)
            emit(video_row(cand.video_id, cand.path, status=FAILED, info=info if isinstance(info, MediaInfo) else None,
                           error_stage=v.stage, error_message=v.message, size_bytes=cand.size_bytes,
                           provenance=prov, config_json=cfg_json, mtime_ns=cand.mtime_ns, inode=cand.inode,
                           etag=cand.etag), [])
        else:
            videos[cand.video_id] = v

    while handles:
        for h in executor.wait(timeout=1.0):
            video_id, kind = handles.pop(h)
            v = videos[video_id]
            try:
                value = executor.result(h)
            except VidanError as e:
                value = e
            if kind == FINISH:
                emit(*_finished(v, value, prov, cfg_json))
                del videos[video_id]
                continue
            bar.part_done()
            if _collect(v, kind, value):
                if not v.parts.frames and not v.parts.audio:
                    emit(_row(v, FAILED, prov, cfg_json, error=v.errors[0]), [])
                    del videos[video_id]
                else:
                    handles[executor.submit(FINISH, FinishJob(v.video_id, v.path, v.parts, prov))] = (video_id, FINISH)
    committer.ready = lambda: True
    bar.close()


def _schedule(cand, info, config: Config, executor: Executor, handles: dict, bar: Progress,
              storage_options: Optional[dict] = None):
    """Submit every part of one video; its ``_Video``, or the error that stops it early."""
    err = _early_failure(cand, info)
    if err is not None:
        return err
    v = _Video(cand.video_id, cand.path, info, VideoParts(info), stat=_stat(cand.path),
               identity={"mtime_ns": cand.mtime_ns, "inode": cand.inode, "etag": cand.etag})
    lim = config.limits
    spans = {VISUAL: plan_parts(info.duration_s, min(lim.part_s, lim.frames_part_s)),
             AUDIO: plan_parts(info.duration_s, lim.part_s)}
    for kind, wanted in ((VISUAL, info.has_video), (AUDIO, info.has_audio)):
        if not wanted:
            continue
        for i, span in enumerate(spans[kind]):
            job = PartJob(cand.video_id, cand.path, info, span, i, len(spans[kind]), etag=cand.etag or "",
                          storage_options=storage_options)
            handles[executor.submit(kind, job)] = (cand.video_id, kind)
            v.pending += 1
            bar.parts_total += 1
        v.submitted[kind] = len(spans[kind])
    v.parts.transcribed = info.has_audio and config.asr.backend != "none"
    return v


def _collect(v: _Video, kind: str, value: Any) -> bool:
    """Take one part result; True once the video has all of its parts."""
    v.pending -= 1
    if isinstance(value, VidanError):
        v.errors.append(value)
        v.failed_kinds[kind] = v.failed_kinds.get(kind, 0) + 1
    elif isinstance(value, FramePart):
        v.parts.frames.append(value)
    elif isinstance(value, AudioPart):
        v.parts.audio.append(value)
    if v.pending:
        return False
    v.parts.frames.sort(key=lambda p: p.span.start_s)
    v.parts.audio.sort(key=lambda p: p.span.start_s)
    return True


def _stat(path: str) -> Optional[tuple[int, int]]:
    from vidan.sources import is_remote

    if is_remote(path):
        return None  # objects are immutable: a change is a new ETag, seen by the next run
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _disp(p: str) -> str:
    from vidan.report import display_path

    return display_path(p)


def _early_failure(cand, info) -> Optional[VidanError]:
    if cand.error:
        return VidanError(STAGE_DISCOVER, cand.error)
    if isinstance(info, VidanError):
        return info
    if not isinstance(info, MediaInfo):
        return VidanError(STAGE_PROBE, "file was not probed")
    if not info.has_video and not info.has_audio:
        return MediaError(STAGE_PROBE, "no audio or video stream")
    if not info.duration_s or info.duration_s <= 0:
        return MediaError(STAGE_PROBE, "could not determine the duration")
    return None


def _row(v: _Video, status: str, prov: dict, cfg_json: str, *, error: Optional[VidanError] = None,
         notes: Iterable[str] = (), **extra: Any) -> dict:
    frames = v.parts.frames
    audio = v.parts.audio
    lang, _ = v.parts.language()
    if v.info is not None and v.info.clock_jumps:  # how it was read, not a loss: the status stays
        from vidan.media.timeline import jump_note

        notes = [jump_note(v.info.clock_jumps), *notes]
    return video_row(
        v.video_id, v.path, status=status, info=v.info,
        error_stage=error.stage if error else None, error_message=error.message if error else None,
        notes=list(notes), provenance=prov, config_json=cfg_json,
        frame_backend=",".join(sorted({p.backend for p in frames})) or None,
        frames_decoded=sum(p.frames_decoded for p in frames) if frames else None,
        frames_sampled=sum(p.frames_sampled for p in frames) if frames else None,
        audio_decoded_s=sum(p.samples_decoded_s for p in audio) if audio else None,
        shot_cuts=[{"t_s": c.t_s, "kind": c.kind, "score": c.score} for c in v.parts.cuts] if frames else None,
        language=lang, processing_s=time.perf_counter() - v.started, **v.identity, **extra,
    )


def _finished(v: _Video, value: Any, prov: dict, cfg_json: str) -> tuple[dict, list[dict]]:
    if isinstance(value, VidanError):
        return _row(v, FAILED, prov, cfg_json, error=value), []
    segments, _ = value
    notes = [n for p in (*v.parts.frames, *v.parts.audio) for n in p.notes]
    for kind, n in v.failed_kinds.items():
        notes.append(f"{n} of {v.submitted[kind]} {kind} part(s) failed")
    now = _stat(v.path)
    if now is None and v.stat is not None:
        notes.append("file disappeared during the run")
    elif v.stat is not None and now != v.stat:
        notes.append("file changed during the run: results may mix old and new content")
    notes = list(dict.fromkeys(notes))  # overlapping parts can hear the same fault twice
    status = PARTIAL if (v.errors or notes) else OK
    err = v.errors[0] if v.errors else None
    return _row(v, status, prov, cfg_json, error=err, notes=notes, n_segments=len(segments)), segments
