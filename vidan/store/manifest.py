"""The commit record: which part files make up the report at one version.

Pure data. A report at version N is exactly the files that ``_commits/N.json`` lists:
readers never list folders, so files being written, or left behind by a run that was
killed, are invisible to them. Rows of one batch of videos live together in a *group*
(one ``videos`` file and one ``segments`` file), so that replacing a video rewrites only
the small group that held it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

LAYOUT = 2  # the report layout this vidan writes and reads
COMMITS = "_commits"
MARKER = "_vidan"
DATASET_DIRS = ("videos", "segments", "skipped")
INDEX_DIR = "index"  # one search-index sidecar per group (vidan.index), not a dataset


def commit_key(version: int) -> str:
    return f"{COMMITS}/{version:010d}.json"


def version_of(name: str) -> Optional[int]:
    stem = name[:-5] if name.endswith(".json") else None
    return int(stem) if stem and stem.isdigit() else None


@dataclass(frozen=True)
class Group:
    id: str
    videos: str  # key of the videos part file, relative to the report root
    segments: Optional[str]  # None when the batch has no segment rows
    n_videos: int
    n_segments: int
    bytes: int = 0  # on-disk size of both files, to decide what to compact
    index: Optional[str] = None  # key of the group's search-index sidecar; None in older reports


@dataclass(frozen=True)
class Manifest:
    version: int = 0
    groups: tuple[Group, ...] = ()
    skipped: tuple[str, ...] = ()
    run_id: Optional[str] = None
    committed_at: Optional[str] = None
    host: Optional[str] = None
    vidan_version: Optional[str] = None
    analysis_key: Optional[str] = None
    tag_key: Optional[str] = None
    change: dict[str, int] = field(default_factory=dict)  # what this commit did: added, superseded, ...
    run: dict[str, Any] = field(default_factory=dict)  # the run's own record, on its last commit

    def files(self, dataset: str) -> list[str]:
        if dataset == "skipped":
            return list(self.skipped)
        if dataset == "videos":
            return [g.videos for g in self.groups]
        return [g.segments for g in self.groups if g.segments]

    def all_files(self) -> set[str]:
        """The live parquet part files."""
        return {f for d in DATASET_DIRS for f in self.files(d)}

    def index_files(self) -> set[str]:
        """The live search-index sidecars."""
        return {g.index for g in self.groups if g.index}

    @property
    def n_videos(self) -> int:
        return sum(g.n_videos for g in self.groups)

    @property
    def n_segments(self) -> int:
        return sum(g.n_segments for g in self.groups)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["layout"] = LAYOUT
        return json.dumps(d, indent=1, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        d = json.loads(data)
        if d.pop("layout", None) != LAYOUT:
            raise ValueError("commit record of another report layout")
        d["groups"] = tuple(Group(**g) for g in d.get("groups", ()))
        d["skipped"] = tuple(d.get("skipped", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
