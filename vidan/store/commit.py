"""The report store: part files that never change, made live by one manifest per commit.

A commit writes its part files first, then creates ``_commits/<version>.json`` with
put-if-absent. That create is the commit point: a run killed at any moment leaves
either the previous version or the new one, and files nobody listed (invisible to
readers, deleted by the next run). Two writers that race for the same version: one
create fails, and that writer rebuilds its commit on top of the winner's.

Replacing a video (changed file, new analysis, retried) drops its old rows in the same
commit that adds the new ones: the small group holding the old rows is rewritten
without them. Re-tagging rewrites every group once, in one commit.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidan.report import DATASETS, to_table
from vidan.store.manifest import COMMITS, DATASET_DIRS, INDEX_DIR, LAYOUT, MARKER, Group, Manifest, commit_key, version_of
from vidan.store.storage import LocalStorage, OutputError, Storage, open_storage

RUNS = "_runs"
KEEP_COMMITS = 50  # older commit records are pruned at the end of a run; _runs/ keeps the history
COMPACT_BELOW_BYTES = 16 << 20  # groups smaller than this are merged at the end of a run...
COMPACT_TARGET_BYTES = 64 << 20  # ...into groups of about this size (bounds a later rewrite)
ROW_GROUP_ROWS = {"segments": 4096}  # a search reads the row groups of its hits only; 64 Ki rows elsewhere
MAX_COMMIT_TRIES = 100
# The names vidan gives its part files (see ``_name``): cleanup touches nothing else.
_PART = re.compile(r"part-[A-Za-z0-9_.-]+-[0-9a-f]{8}-\d{5}\.parquet")
_SIDECAR = re.compile(r"part-[A-Za-z0-9_.-]+-[0-9a-f]{8}-\d{5}\.vidx")


class NotAReport(OutputError):
    pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReportStore:
    def __init__(self, storage: Storage):
        self.storage = storage
        self.uri = storage.uri
        self._latest: Optional[Manifest] = None
        self._ids: dict[str, frozenset[str]] = {}  # group id -> video ids in it
        self.token = secrets.token_hex(4)  # names this process's files, for cleanup
        self._seq = 0

    # --- opening -------------------------------------------------------------------

    @classmethod
    def create(cls, uri, options: Optional[dict] = None) -> "ReportStore":
        """Open a report for writing, creating it when the location is new or empty.

        vidan writes only where it owns the place: a location that holds anything
        and is not marked as a vidan report is refused, so no user file is ever
        replaced or deleted.
        """
        storage = open_storage(uri, options)
        check = getattr(storage, "check_conditional_create", None)
        if check is not None:
            check()
        marker = storage.read(MARKER)
        if marker is None:
            if not storage.is_empty():
                raise NotAReport(_not_ours(storage))
            if isinstance(storage, LocalStorage):
                storage.mkdir()
            body = json.dumps({"format": "vidan-report", "layout": LAYOUT, "created_at": _now()}).encode()
            storage.create(MARKER, body)
        else:
            _check_marker(storage, marker)
        return cls(storage)

    @classmethod
    def open(cls, uri, options: Optional[dict] = None) -> "ReportStore":
        """Open an existing report for reading."""
        storage = open_storage(uri, options)
        marker = storage.read(MARKER)
        if marker is None:
            raise FileNotFoundError(f"no vidan report in {storage.uri} (no {MARKER} marker)")
        _check_marker(storage, marker)
        return cls(storage)

    # --- reading -------------------------------------------------------------------

    def latest(self, refresh: bool = True) -> Manifest:
        if self._latest is not None and not refresh:
            return self._latest
        versions = sorted(v for v in (version_of(n) for n, _ in self.storage.list(COMMITS)) if v is not None)
        m = Manifest()
        for v in reversed(versions):
            raw = self.storage.read(commit_key(v))
            if raw is not None:  # pruned between list and read: take the next newest
                m = Manifest.from_json(raw)
                break
        self._latest = m
        return m

    def manifests(self) -> list[Manifest]:
        out = []
        for name, _ in self.storage.list(COMMITS):
            v = version_of(name)
            raw = self.storage.read(commit_key(v)) if v is not None else None
            if raw is not None:
                out.append(Manifest.from_json(raw))
        return sorted(out, key=lambda m: m.version)

    def read_table(self, dataset: str, columns: Optional[Sequence[str]] = None,
                   manifest: Optional[Manifest] = None) -> pa.Table:
        """The live rows of ``dataset`` at ``manifest`` (default: the latest commit)."""
        m = manifest or self.latest()
        schema = DATASETS[dataset]
        files = m.files(dataset)
        if not files:
            return schema.empty_table().select(list(columns) if columns else schema.names)
        return self._read_files(files, schema, columns)

    def _read_files(self, keys: Sequence[str], schema: pa.Schema, columns=None) -> pa.Table:
        import pyarrow.dataset as pads

        fs, base = self.storage.arrow()
        ds = pads.dataset([f"{base}/{k}" for k in keys], schema=schema, format="parquet", filesystem=fs)
        return ds.to_table(columns=list(columns) if columns else None)

    def runs(self) -> list[dict]:
        out = []
        for name, _ in self.storage.list(RUNS):
            if name.endswith(".json"):
                raw = self.storage.read(f"{RUNS}/{name}")
                if raw:
                    out.append(json.loads(raw))
        return sorted(out, key=lambda r: r.get("started_at") or "")

    # --- writing part files ----------------------------------------------------------

    def _name(self, dataset: str, tag: str, ext: str = "parquet") -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
            raise ValueError(f"bad file tag {tag!r}")
        self._seq += 1
        return f"{dataset}/part-{tag}-{self.token}-{self._seq:05d}.{ext}"

    def _write(self, key: str, table: pa.Table) -> int:
        fs, base = self.storage.arrow()
        path = f"{base}/{key}"
        if isinstance(self.storage, LocalStorage):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        rows = ROW_GROUP_ROWS.get(key.split("/", 1)[0], 64 * 1024)
        pq.write_table(table, path, filesystem=fs, compression="zstd", row_group_size=rows)
        if isinstance(self.storage, LocalStorage):  # durable before any commit lists it
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        info = fs.get_file_info(path)
        return int(info.size or 0)

    def write_group(self, videos: list[dict] | pa.Table, segments: list[dict] | pa.Table, tag: str,
                    index: Optional[str] = None) -> Group:
        """Write one batch of videos (their videos rows and segment rows) as a new group.

        ``index``: the search-index sidecar of a live group with these very segment rows,
        in this order and with these embeddings (re-tagging changes tags only): it is
        shared instead of built again."""
        vt = _as_table(videos, "videos")
        st = _as_table(segments, "segments")
        if vt.num_rows == 0:
            raise ValueError("a group needs at least one video")
        gid = f"{tag}-{self.token}-{self._seq + 1:05d}"
        vkey = self._name("videos", tag)
        size = self._write(vkey, vt)
        skey = None
        if st.num_rows:
            skey = self._name("segments", tag)
            size += self._write(skey, st)
        ids = frozenset(vt.column("video_id").to_pylist())
        if len(ids) != vt.num_rows:
            raise ValueError("a group holds each video once")
        ikey = index if index is not None else self._write_index(st, tag) if st.num_rows else None
        self._ids[gid] = ids
        return Group(gid, vkey, skey, vt.num_rows, st.num_rows, size, ikey)

    def _write_index(self, segments: pa.Table, tag: str) -> Optional[str]:
        # written like a part file, before any commit lists it: the index is as atomic as the rows
        from vidan.index import build

        body = build(segments)
        if body is None:
            return None
        key = self._name(INDEX_DIR, tag, "vidx")
        if isinstance(self.storage, LocalStorage):
            path = self.storage.path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())  # durable before any commit lists it
        else:
            self.storage.put(key, body)
        return key

    def write_skipped(self, rows: list[dict], tag: str) -> list[str]:
        if not rows:
            return []
        key = self._name("skipped", tag)
        self._write(key, _as_table(rows, "skipped"))
        return [key]

    # --- committing ------------------------------------------------------------------

    def ids_of(self, group: Group) -> frozenset[str]:
        ids = self._ids.get(group.id)
        if ids is None:
            t = self._read_files([group.videos], DATASETS["videos"], ["video_id"])
            ids = self._ids[group.id] = frozenset(t.column("video_id").to_pylist())
        return ids

    def where(self, manifest: Manifest) -> dict[str, Group]:
        """video id -> the live group holding its rows."""
        return {v: g for g in manifest.groups for v in self.ids_of(g)}

    def _without(self, group: Group, drop: frozenset[str], tag: str) -> Optional[Group]:
        keep = self.ids_of(group) - drop
        if not keep:
            return None
        fs_keep = pa.array(sorted(keep))
        vt = self._read_files([group.videos], DATASETS["videos"])
        vt = vt.filter(pc.is_in(vt.column("video_id"), fs_keep))
        st = (self._read_files([group.segments], DATASETS["segments"]) if group.segments
              else DATASETS["segments"].empty_table())
        st = st.filter(pc.is_in(st.column("video_id"), fs_keep)) if st.num_rows else st
        return self.write_group(vt, st, tag)

    def commit(self, *, add: Sequence[Group] = (), drop: Iterable[str] = (), skipped: Optional[list[str]] = None,
               rewrite: Optional[Callable[[Group], Group]] = None, meta: dict[str, Any], tag: str) -> tuple[Manifest, int]:
        """Make ``add`` live, with every earlier row of their videos (and of ``drop``)
        gone, in one new version. ``skipped`` replaces the skipped list when given;
        ``rewrite`` maps every remaining group to a rewritten one (re-tagging).
        Returns the new manifest and how many earlier videos were superseded.
        """
        new_ids = frozenset().union(*(self.ids_of(g) for g in add)) if add else frozenset()
        remove = new_ids | frozenset(drop)
        done: dict[str, Optional[Group]] = {}  # rewritten groups survive a lost race
        for _ in range(MAX_COMMIT_TRIES):
            base = self.latest()
            groups: list[Group] = []
            superseded = 0
            for g in base.groups:
                ids = self.ids_of(g)
                hit = ids & remove
                superseded += len(hit)
                if hit:
                    if g.id not in done:
                        done[g.id] = self._without(g, remove, tag)
                    g2 = done[g.id]
                else:
                    g2 = g
                if g2 is not None and rewrite is not None:
                    key = "rw:" + g2.id
                    if key not in done:
                        done[key] = rewrite(g2)
                    g2 = done[key]
                if g2 is not None:
                    groups.append(g2)
            m = Manifest(version=base.version + 1, groups=tuple(groups) + tuple(add),
                         skipped=tuple(skipped) if skipped is not None else base.skipped,
                         committed_at=_now(), host=socket.gethostname(), **meta)
            if self.storage.create(commit_key(m.version), m.to_json()):
                self._latest = m
                return m, superseded
        raise OutputError(f"could not commit to {self.uri} after {MAX_COMMIT_TRIES} tries (too many writers)")

    def put_run(self, record: dict) -> None:
        self.storage.put(f"{RUNS}/{record['run_id']}.json",
                         json.dumps(record, indent=1, sort_keys=True, default=str).encode())

    # --- tidying at the end of a run -------------------------------------------------

    def compact(self, meta: dict, tag: str) -> Optional[Manifest]:
        """Merge small groups so a report stays a few files, each bounded in size."""
        base = self.latest()
        small = [g for g in base.groups if g.bytes < COMPACT_BELOW_BYTES]
        if len(small) < 2:
            return None
        batches: list[list[Group]] = [[]]
        size = 0
        for g in small:
            if batches[-1] and size + g.bytes > COMPACT_TARGET_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(g)
            size += g.bytes
        merged: dict[str, Group] = {}
        sources: set[str] = set()
        for batch in batches:
            if len(batch) < 2:
                continue
            vt = self._read_files([g.videos for g in batch], DATASETS["videos"])
            segs = [g.segments for g in batch if g.segments]
            st = self._read_files(segs, DATASETS["segments"]) if segs else DATASETS["segments"].empty_table()
            new = self.write_group(vt, st, tag)
            for g in batch:
                merged[g.id] = new
                sources.add(g.id)
        if not merged:
            return None
        latest = self.latest()
        if {g.id for g in latest.groups} & sources != sources:
            return None  # another writer changed those groups meanwhile: compact next time
        groups, placed = [], set()
        for g in latest.groups:
            if g.id in merged:
                if merged[g.id].id not in placed:
                    groups.append(merged[g.id])
                    placed.add(merged[g.id].id)
            else:
                groups.append(g)
        m = Manifest(version=latest.version + 1, groups=tuple(groups), skipped=latest.skipped,
                     committed_at=_now(), host=socket.gethostname(), **meta)
        if self.storage.create(commit_key(m.version), m.to_json()):
            self._latest = m
            return m
        return None

    def cleanup(self, started: float) -> int:
        """Delete part files no commit lists any more, and old commit records.

        Only vidan's own part files, inside its own marked report, are ever deleted:
        files this process wrote, and files older than this run's start (left by
        killed runs or superseded). A writer that started after us keeps its files.
        """
        latest = self.latest()
        live = latest.all_files() | latest.index_files()
        n = 0
        for d in (*DATASET_DIRS, INDEX_DIR):
            pattern = _SIDECAR if d == INDEX_DIR else _PART
            for name, mtime in self.storage.list(d):
                key = f"{d}/{name}"
                if not pattern.fullmatch(name) or key in live:
                    continue
                if f"-{self.token}-" in name or mtime < started:
                    self.storage.delete(key)
                    n += 1
        versions = sorted(v for v in (version_of(nm) for nm, _ in self.storage.list(COMMITS)) if v is not None)
        for v in versions[:-KEEP_COMMITS]:
            self.storage.delete(commit_key(v))
        return n


def _as_table(rows, dataset: str) -> pa.Table:
    schema = DATASETS[dataset]
    if isinstance(rows, pa.Table):
        return rows if rows.schema == schema else rows.select(schema.names).cast(schema)
    return to_table(rows, schema)


def _check_marker(storage: Storage, raw: bytes) -> None:
    try:
        d = json.loads(raw)
    except ValueError:
        d = {}
    if d.get("format") != "vidan-report":
        raise NotAReport(f"{storage.uri}/{MARKER} is not a vidan report marker")
    if d.get("layout") != LAYOUT:
        raise NotAReport(f"{storage.uri} is a vidan report of layout {d.get('layout')}; "
                         f"this vidan reads layout {LAYOUT}: analyse into a new folder")


def _not_ours(storage: Storage) -> str:
    shown = ""
    if isinstance(storage, LocalStorage):
        names = storage.entries()
        shown = ": it holds " + ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
        legacy = {"videos", "segments", "_runs"} <= set(names)
        if legacy:
            return (f"{storage.uri} looks like a report of an older vidan (no {MARKER} marker): "
                    "analyse into a new folder")
    return (f"{storage.uri} is not empty and is not a vidan report{shown}. vidan writes only into a new "
            f"or empty folder, or a report it created, so it never replaces or deletes your files: "
            f"choose another --out (for example {os.path.join(storage.uri, 'vidan-report')})")
