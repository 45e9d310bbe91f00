"""The incremental report store: see ``commit`` (the protocol), ``keys`` (identity),
``lock`` (one writer at a time) and ``storage`` (local folders and object stores)."""

from vidan.store.commit import NotAReport, ReportStore
from vidan.store.lock import LockedError, make_lock
from vidan.store.manifest import Group, Manifest
from vidan.store.storage import OutputError, open_storage

__all__ = ["ReportStore", "NotAReport", "OutputError", "LockedError", "make_lock", "Group", "Manifest", "open_storage"]
