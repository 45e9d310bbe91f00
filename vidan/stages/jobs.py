"""The items the driver submits: one part of one video, or one video to finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from vidan.records import MediaInfo, Span


@dataclass(frozen=True)
class PartJob:
    """One part (a time span) of one video, for the visual or the audio chain."""

    video_id: str
    path: str
    info: MediaInfo
    span: Span
    part_index: int
    n_parts: int
    # object storage inputs: the worker copies the object to node-local scratch first
    etag: str = ""
    storage_options: Optional[dict] = None

    def local(self):
        """A context giving a local path to decode (the file itself, or a scratch copy)."""
        from vidan.sources import local_copy

        return local_copy(self.path, self.etag, self.storage_options, self.info.size_bytes,
                          continuous=bool(self.info.clock_jumps))


@dataclass(frozen=True)
class FinishJob:
    """A video whose parts are all in: turned into segment rows."""

    video_id: str
    path: str
    parts: Any  # vidan.assemble.VideoParts
    provenance: dict
