"""What a run has to do, given what the report already holds.

Pure logic over plain rows. A video is its content hash; its rows are keyed by that
hash and the analysis key. For every file found:

* ``new``: content never seen (or only under a different analysis key: ``reanalyse``);
* ``unchanged``: same content, same analysis key; kept as is, never read again;
* ``retry``: it failed before and ``--retry-failed`` asks again;
* ``moved``: same content at a new path, the old path gone: rows rewritten, not re-analysed;
* ``retag``: same analysis, another taxonomy: tags recomputed from stored embeddings.

A changed file (new content at a known path) is new; its old rows are superseded in the
commit that adds the new ones. Rows of files that disappeared are kept: a nightly job
over a growing folder should not forget what it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from vidan.records import FAILED


@dataclass(frozen=True)
class Stored:
    """What the report holds for one video (one live ``videos`` row)."""

    video_id: str
    path: str
    status: str
    analysis_key: Optional[str]
    tag_key: Optional[str]
    size_bytes: Optional[int] = None
    mtime_ns: Optional[int] = None
    inode: Optional[int] = None
    etag: Optional[str] = None  # object storage inputs: the ETag stands in for the inode


@dataclass
class WorkPlan:
    analyse: list = field(default_factory=list)  # candidates to analyse (new, changed, reanalyse, retry)
    reasons: dict[str, str] = field(default_factory=dict)  # video_id -> new | changed | reanalyse | retry | reprocess
    supersede: dict[str, str] = field(default_factory=dict)  # new video_id -> old video_id it replaces (changed file)
    moved: list = field(default_factory=list)  # (candidate, stored) with a new path
    refresh: list = field(default_factory=list)  # (candidate, stored): same path and bytes, new mtime or inode
    retag: set[str] = field(default_factory=set)  # video ids whose tags are stale
    unchanged: list = field(default_factory=list)

    def count(self, reason: str) -> int:
        return sum(1 for r in self.reasons.values() if r == reason)


def identity_index(stored: Iterable[Stored]):
    """A ``known`` function for discovery: trusts a stored id while path, size, mtime and inode match."""
    table = {(s.path, s.size_bytes, s.mtime_ns, s.inode if s.inode is not None else s.etag): s.video_id
             for s in stored if s.mtime_ns is not None and s.size_bytes is not None}

    def known(path: str, size: int, mtime_ns: int, ident) -> Optional[str]:
        return table.get((path, size, mtime_ns, ident))

    return known


def plan_work(candidates: Sequence, stored: Sequence[Stored], *, analysis_key: str, tag_key: str,
              retry_failed: bool = False, reprocess: bool = False, present_paths: Iterable[str] = ()) -> WorkPlan:
    """Decide, for each candidate (``vidan.discover.Candidate``), what this run does.

    ``present_paths``: every file path this run saw (candidates and skipped), to tell
    a moved file (old path gone) from a copy (old path still there).
    """
    by_id = {s.video_id: s for s in stored}
    by_path = {s.path: s for s in stored}
    present = set(present_paths) | {c.path for c in candidates}
    ids_now = {c.video_id for c in candidates}
    plan = WorkPlan()
    for c in candidates:
        s = by_id.get(c.video_id)
        if s is None:
            old = by_path.get(c.path)
            plan.analyse.append(c)
            if old is not None and old.video_id != c.video_id:
                plan.reasons[c.video_id] = "changed"
                if old.video_id not in ids_now:  # the old content is not still here under another name
                    plan.supersede[c.video_id] = old.video_id
            else:
                plan.reasons[c.video_id] = "new"
            continue
        if reprocess:
            plan.analyse.append(c)
            plan.reasons[c.video_id] = "reprocess"
        elif s.analysis_key != analysis_key:
            plan.analyse.append(c)
            plan.reasons[c.video_id] = "reanalyse"
        elif s.status == FAILED and retry_failed:
            plan.analyse.append(c)
            plan.reasons[c.video_id] = "retry"
        elif s.path != c.path and s.path not in present:
            plan.moved.append((c, s))
            if s.tag_key != tag_key and s.status != FAILED:
                plan.retag.add(c.video_id)
        else:
            plan.unchanged.append(c)
            if s.tag_key != tag_key and s.status != FAILED:
                plan.retag.add(c.video_id)
            if not c.known and s.path == c.path and c.mtime_ns is not None:
                # same bytes, new stat (touched, copied back): record the new identity so
                # the next run need not read the file again
                plan.refresh.append((c, s))
    return plan
