"""The driver: discover -> probe -> parts -> visual/audio stages -> finish -> commit.

The driver owns the loop and the report; *where* each stage runs is the executor's
business. ``LocalExecutor`` runs stages in this process (tests, debugging); the Ray
executor in ``workers/`` runs them on actor pools. Both satisfy ``Executor``.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence

from vidan import __version__
from vidan.assemble import VideoParts
from vidan.config import Config
from vidan.records import (FAILED, OK, PARTIAL, STAGE_DISCOVER, STAGE_PROBE, AudioPart, FramePart,
                           MediaError, MediaInfo, VidanError)
from vidan.rows import video_row
from vidan.segments import plan_parts
from vidan.stages import AUDIO, FINISH, STAGE_OF_KIND, VISUAL, PartJob
from vidan.store import ReportWriter

log = logging.getLogger("vidan")



class Executor(Protocol):
    def start(self, config: Config) -> dict[str, str]:
        """Load the stages; return the model ids (asr, vision, text)."""

    def submit(self, kind: str, *args: Any) -> Any:
        """Queue one call of stage ``kind``; return a handle."""

    def wait(self, timeout: float) -> list[Any]:
        """Handles that finished (possibly none after ``timeout`` seconds)."""

    def result(self, handle: Any) -> Any:
        """The stage's return value, or raise ``VidanError`` naming what failed."""

    def shutdown(self) -> None: ...


class LocalExecutor:
    """Runs every stage in this process, one call at a time: finishing calls first, then
    parts in submission order."""

    def __init__(self, device: str = "auto"):
        self.device = device
        self._queue: deque = deque()
        self._done: dict[int, tuple[bool, Any]] = {}
        self._next = 0

    def start(self, config: Config) -> dict[str, str]:
        from vidan.stages import AudioStage, FinishStage, VisualStage

        self._stages = {VISUAL: VisualStage(config, self.device), AUDIO: AudioStage(config, self.device),
                        FINISH: FinishStage(config, self.device)}
        return {"vision": self._stages[VISUAL].model_id, "asr": self._stages[AUDIO].model_id,
                "text": self._stages[FINISH].model_id, "taxonomy": self._stages[FINISH].taxonomy.id}

    def submit(self, kind: str, *args: Any) -> int:
        h = self._next
        self._next += 1
        self._queue.append((h, kind, args))
        return h

    def wait(self, timeout: float) -> list[int]:
        if not self._queue:
            return []
        # finish a video before starting the next one's parts: results reach the report
        # (and memory is freed) as early as possible
        item = next((x for x in self._queue if x[1] == FINISH), None)
        if item is not None:
            self._queue.remove(item)
        else:
            item = self._queue.popleft()
        h, kind, args = item
        try:
            self._done[h] = (True, self._stages[kind](*args))
        except VidanError as e:
            self._done[h] = (False, e)
        except Exception as e:  # a bug or a model error must still become a row, with its cause
            log.debug("stage %s failed", kind, exc_info=True)
            self._done[h] = (False, VidanError(STAGE_OF_KIND[kind], f"{type(e).__name__}: {e}"))
        return [h]

    def result(self, handle: int) -> Any:
        ok, value = self._done.pop(handle)
        if not ok:
            raise value
        return value

    def shutdown(self) -> None:
        self._stages = {}


@dataclass
class RunSummary:
    out: Path
    run_id: str
    files: int = 0
    ok: int = 0
    partial: int = 0
    failed: int = 0
    skipped: int = 0
    segments: int = 0
    seconds: float = 0.0
    record: Optional[Path] = None

    @property
    def exit_code(self) -> int:
        """0: every file analysed; 1: finished, some files failed or partial."""
        return 0 if (self.failed == 0 and self.partial == 0) else 1


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


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run(paths: Sequence[str | os.PathLike], out: str | os.PathLike, config: Config, executor: Executor, *,
        progress: bool = True) -> RunSummary:
    from vidan.discover import discover

    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run_id = new_run_id()
    writer = ReportWriter(out, run_id)  # fails early, before any work, when OUT is unusable
    summary = RunSummary(out=Path(out), run_id=run_id)
    try:
        found, probes = discover(paths)
        found = _outside(found, Path(out))
        writer.write_rows("skipped", [{"path": _disp(s.path), "reason": s.reason, "run_id": run_id}
                                      for s in found.skipped])
        summary.skipped = len(found.skipped)
        summary.files = len(found.candidates)
        bar = _Progress(summary.files, enabled=progress)
        models = executor.start(config) if found.candidates else {}
        bar.started()
        prov = {"config_hash": config.hash(), "models": models, "run_id": run_id}
        cfg_json = config.to_json()

        def emit(row: dict, segments: list[dict]) -> None:
            writer.write_rows("videos", [row])
            writer.write_rows("segments", segments)
            summary.segments += len(segments)
            status = row["status"]
            setattr(summary, status, getattr(summary, status) + 1)
            bar.update(status)

        handles: dict[Any, tuple[str, str]] = {}
        videos: dict[str, _Video] = {}
        for cand in found.candidates:
            info = probes.get(cand.path)
            err = _early_failure(cand, info)
            if err is not None:
                emit(video_row(cand.video_id, cand.path, status=FAILED, info=info if isinstance(info, MediaInfo) else None,
                               error_stage=err.stage, error_message=err.message, size_bytes=cand.size_bytes,
                               provenance=prov, config_json=cfg_json), [])
                continue
            v = _Video(cand.video_id, cand.path, info, VideoParts(info), stat=_stat(cand.path))
            spans = plan_parts(info.duration_s, config.limits.part_s)
            for kind, wanted in ((VISUAL, info.has_video), (AUDIO, info.has_audio)):
                if not wanted:
                    continue
                for i, span in enumerate(spans):
                    job = PartJob(cand.video_id, cand.path, info, span, i, len(spans))
                    handles[executor.submit(kind, job)] = (cand.video_id, kind)
                    v.pending += 1
                    bar.parts_total += 1
                v.submitted[kind] = len(spans)
            v.parts.transcribed = info.has_audio and config.asr.backend != "none"
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
                v.pending -= 1
                bar.part_done()
                if isinstance(value, VidanError):
                    v.errors.append(value)
                    v.failed_kinds[kind] = v.failed_kinds.get(kind, 0) + 1
                elif isinstance(value, FramePart):
                    v.parts.frames.append(value)
                elif isinstance(value, AudioPart):
                    v.parts.audio.append(value)
                if v.pending == 0:
                    if not v.parts.frames and not v.parts.audio:
                        e = v.errors[0]
                        emit(_row(v, FAILED, prov, cfg_json, error=e), [])
                        del videos[video_id]
                    else:
                        v.parts.frames.sort(key=lambda p: p.span.start_s)
                        v.parts.audio.sort(key=lambda p: p.span.start_s)
                        handles[executor.submit(FINISH, v.video_id, v.path, v.parts, prov)] = (video_id, FINISH)
        bar.close()
        summary.seconds = time.perf_counter() - t0
        summary.record = writer.publish({
            "run_id": run_id, "started_at": started_at.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(),
            "inputs": [_disp(os.fsdecode(p)) for p in paths], "config": config.to_dict(), "config_hash": config.hash(),
            "models": models, "vidan_version": __version__,
            "counts": {"files": summary.files, "ok": summary.ok, "partial": summary.partial, "failed": summary.failed,
                       "skipped": summary.skipped, "segments": summary.segments},
            "seconds": round(summary.seconds, 3),
        })
        return summary
    except BaseException:
        writer.abort()
        raise
    finally:
        executor.shutdown()


def _outside(found, out: Path):
    """Drop what lies in the report folder itself: ``vidan analyze . --out reports``
    must not analyse (or list as skipped) its own parquet files on the next run."""
    from vidan.discover import Discovery

    root = os.path.realpath(out)

    def inside(p: str) -> bool:
        real = os.path.realpath(p)
        return real == root or real.startswith(root + os.sep)

    return Discovery(candidates=[c for c in found.candidates if not inside(c.path)],
                     skipped=[s for s in found.skipped if not inside(s.path)])


def _stat(path: str) -> Optional[tuple[int, int]]:
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
    return video_row(
        v.video_id, v.path, status=status, info=v.info,
        error_stage=error.stage if error else None, error_message=error.message if error else None,
        notes=list(notes), provenance=prov, config_json=cfg_json,
        frame_backend=",".join(sorted({p.backend for p in frames})) or None,
        frames_decoded=sum(p.frames_decoded for p in frames) if frames else None,
        frames_sampled=sum(p.frames_sampled for p in frames) if frames else None,
        audio_decoded_s=sum(p.samples_decoded_s for p in audio) if audio else None,
        shot_cuts=[{"t_s": c.t_s, "kind": c.kind, "score": c.score} for c in v.parts.cuts] if frames else None,
        language=lang, processing_s=time.perf_counter() - v.started, **extra,
    )


def _finished(v: _Video, value: Any, prov: dict, cfg_json: str) -> tuple[dict, list[dict]]:
    if isinstance(value, VidanError):
        return _row(v, FAILED, prov, cfg_json, error=value), []
    segments, _ = value
    notes = [n for p in (*v.parts.frames, *v.parts.audio) for n in p.notes]
    for kind, n in v.failed_kinds.items():
        notes.append(f"{n} of {v.submitted[kind]} {kind} part(s) failed")
    now = _stat(v.path)
    if now is None:
        notes.append("file disappeared during the run")
    elif v.stat is not None and now != v.stat:
        notes.append("file changed during the run: results may mix old and new content")
    status = PARTIAL if (v.errors or notes) else OK
    err = v.errors[0] if v.errors else None
    return _row(v, status, prov, cfg_json, error=err, notes=notes, n_segments=len(segments)), segments


class _Progress:
    """A progress bar on stderr: files done, how many failed, and the ETA (tqdm)."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        self.counts = {OK: 0, PARTIAL: 0, FAILED: 0}
        # long files are many parts: counting them shows movement before a file completes
        self.parts_total = 0
        self.parts_done = 0
        if enabled and total:
            from tqdm import tqdm

            # model loading takes a while on a cold start: say so rather than sit silent
            self._bar = tqdm(total=total, unit="file", desc="loading models", dynamic_ncols=True)
            self._bar.refresh()

    def started(self) -> None:
        if self._bar is not None:
            self._bar.set_description("analysing")

    def update(self, status: str) -> None:
        self.counts[status] += 1
        if self._bar is not None:
            self._postfix()
            self._bar.update(1)

    def part_done(self) -> None:
        self.parts_done += 1
        if self._bar is not None:
            self._postfix()
            self._bar.refresh()

    def _postfix(self) -> None:
        self._bar.set_postfix(ok=self.counts[OK], partial=self.counts[PARTIAL], failed=self.counts[FAILED],
                              parts=f"{self.parts_done}/{self.parts_total}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
