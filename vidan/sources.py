"""Inputs in object storage (``s3://bucket/prefix``): list, identify, copy to scratch.

Decoders need a file, so each object is copied to node-local scratch by whoever needs
it (the driver to identify and probe a new object, a worker to decode its parts) and
shared there by every part on the same node. Scratch is bounded (``VIDAN_SCRATCH_GB``,
default 20): the least recently used copies that no process holds are deleted to make
room, and a run removes the copies it made when it ends.

A rerun does not download anything it has seen: an object whose key, size, ETag and
modification time match a report row keeps that row's ``video_id``. A new object is
hashed while it is copied, so its ``video_id`` is its content hash, as for a local file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from vidan.media.timeline import COPY_SUFFIX, write_continuous

_CHUNK = 8 << 20


def is_remote(path) -> bool:
    p = os.fspath(path)
    return isinstance(p, str) and "://" in p and not p.startswith("file://")


@dataclass(frozen=True)
class RemoteObject:
    uri: str
    size: int
    etag: str
    mtime_ns: int


def _store(uri: str, options: Optional[dict] = None):
    from vidan.store.objects import ObjectStorage

    return ObjectStorage(uri, options or {})


def list_objects(uri: str, options: Optional[dict] = None) -> list[RemoteObject]:
    """Every object under ``uri`` (a prefix, or one object), in key order."""
    import obstore

    st = _store(uri, options)
    out = []
    for batch in obstore.list(st._store, None):
        for o in batch:
            out.append(_remote(f"{st.uri}/{o['path']}", o))
    if not out and st.prefix:  # maybe the URI names one object rather than a prefix
        parent, _, key = st.uri.rpartition("/")
        try:
            o = obstore.head(_store(parent, options)._store, key)
        except FileNotFoundError:
            return []
        return [_remote(st.uri, o)]
    return sorted(out, key=lambda o: o.uri)


def _remote(uri: str, meta: dict) -> RemoteObject:
    return RemoteObject(uri, int(meta["size"]), (meta.get("e_tag") or "").strip('"'),
                        int(meta["last_modified"].timestamp() * 1e9))


def _scratch_path() -> Path:
    return Path(os.environ.get("VIDAN_SCRATCH") or Path(tempfile.gettempdir()) / f"vidan-scratch-{os.getuid()}")


def scratch_dir() -> Path:
    d = _scratch_path()
    d.mkdir(parents=True, exist_ok=True)
    return d


def _limit_bytes() -> int:
    return int(float(os.environ.get("VIDAN_SCRATCH_GB", "20")) * (1 << 30))


def _name(uri: str, etag: str) -> str:
    ext = os.path.splitext(uri.rsplit("/", 1)[-1])[1][:12]
    return hashlib.sha256(f"{uri}\0{etag}".encode()).hexdigest()[:32] + ext


def _make_room(d: Path, need: int) -> None:
    files = []
    for p in d.iterdir():
        if p.suffix == ".lock" or p.name.startswith("."):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        files.append((st.st_atime, st.st_size, p))
    total = sum(s for _, s, _ in files)
    for _, size, p in sorted(files):
        if total + need <= _limit_bytes():
            return
        if _held(p):
            continue
        p.unlink(missing_ok=True)
        total -= size


def _held(p: Path) -> bool:
    lock = p.with_name(p.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def download(uri: str, dest: Path, options: Optional[dict] = None) -> str:
    """Copy one object to ``dest`` (whole or not at all); returns its content hash."""
    import obstore

    parent, _, key = _store(uri, options).uri.rpartition("/")
    holder = _store(parent, options)
    h = hashlib.blake2b(digest_size=16)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "wb") as f:
            for chunk in obstore.get(holder._store, key).stream(min_chunk_size=_CHUNK):
                b = bytes(chunk)
                h.update(b)
                f.write(b)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()


@contextmanager
def local_copy(path: str, etag: str = "", options: Optional[dict] = None, size: int = 0,
               continuous: bool = False) -> Iterator[str]:
    """``path`` itself when local; else a scratch copy of the object, held while in use.

    ``continuous``: a scratch copy of the file's pictures and sound on one clock, for a
    file whose clock restarts (``MediaInfo.clock_jumps``; ``vidan.media.timeline``)."""
    if continuous:
        with local_copy(path, etag, options, size) as src:
            with _held_copy(_continuous_name(path, etag, src), size,
                            lambda dest: write_continuous(src, str(dest))) as dest:
                yield dest
        return
    if not is_remote(path):
        yield path
        return
    with _held_copy(_name(path, etag), size, lambda dest: download(path, dest, options)) as dest:
        yield dest


@contextmanager
def _held_copy(name: str, size: int, make) -> Iterator[str]:
    """Scratch file ``name``, made by ``make(dest)`` once per node, held while in use."""
    d = scratch_dir()
    dest = d / name
    lock_fd = os.open(d / (dest.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one copy per node; parts wait for it
        if not dest.exists():
            _make_room(d, size)
            make(dest)
        os.utime(dest)  # most recently used
        fcntl.flock(lock_fd, fcntl.LOCK_SH)  # held while decoding: not evicted under us
        yield str(dest)
    finally:
        os.close(lock_fd)


def _continuous_name(path: str, etag: str, local: str) -> str:
    if not etag:  # a local file: its copy is for these bytes, not for whatever has the name later
        try:
            st = os.stat(local)
            etag = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            pass
    # surrogateescape: a local name that is not UTF-8 hashes as its own bytes
    key = f"{path}\0{etag}\0continuous".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:32] + COPY_SUFFIX


def forget(path: str, etag: str = "") -> None:
    """Remove this node's scratch copies of ``path`` unless a process still holds them."""
    d = _scratch_path()
    if not d.is_dir():  # nothing was copied (a local run need not have scratch space at all)
        return
    names = [_continuous_name(path, etag, path)] if not is_remote(path) else [
        _name(path, etag), _continuous_name(path, etag, path)]
    for name in names:
        p = d / name
        if p.exists() and not _held(p):
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".lock").unlink(missing_ok=True)


def _head(o: RemoteObject, options: Optional[dict], n: int = 8192) -> bytes:
    import obstore

    parent, _, key = _store(o.uri, options).uri.rpartition("/")
    return bytes(obstore.get_range(_store(parent, options)._store, key, start=0, end=min(n, o.size)))


def remote_candidates(uri: str, known, options: Optional[dict] = None):
    """Discovery of one ``s3://`` input: (candidates, skipped, probes), like a local folder.

    Objects the report knows are neither downloaded nor probed. New ones are copied to
    scratch, hashed on the way, and probed there.
    """
    from vidan.discover import Candidate, Skipped, claim, has_media_extension, is_plain_text, not_a_video
    from vidan.media.isolate import probe_isolated

    candidates, skipped, to_probe = [], [], []
    seen: dict[str, str] = {}
    for o in list_objects(uri, options):
        name = o.uri.rsplit("/", 1)[-1]
        if name.startswith(".") or name.startswith("_"):
            skipped.append(Skipped(o.uri, "hidden"))
            continue
        cached = known(o.uri, o.size, o.mtime_ns, o.etag) if known else None
        if cached is not None:
            if claim(seen, cached, o.uri, skipped):
                candidates.append(Candidate(o.uri, cached, o.size, mtime_ns=o.mtime_ns, etag=o.etag, known=True))
            continue
        if o.size == 0:
            skipped.append(Skipped(o.uri, "not a video: empty file (0 bytes)"))
            continue
        from vidan.store.keys import content_hash

        # a few KiB tell a text file from media: documents are never downloaded whole
        if not has_media_extension(name) and is_plain_text(_head(o, options)):
            skipped.append(Skipped(o.uri, "not a video: text file"))
            continue
        with local_copy(o.uri, o.etag, options, o.size) as local:
            vid = content_hash(local)
        if claim(seen, vid, o.uri, skipped):
            to_probe.append((o, vid))
    probes = {}
    if to_probe:
        locals_ = []
        for o, _ in to_probe:
            with local_copy(o.uri, o.etag, options, o.size) as local:
                locals_.append(local)
        for (o, vid), result in zip(to_probe, probe_isolated(locals_)):
            from vidan.records import MediaInfo

            if isinstance(result, MediaInfo) or has_media_extension(o.uri):
                candidates.append(Candidate(o.uri, vid, o.size, mtime_ns=o.mtime_ns, etag=o.etag))
                probes[o.uri] = result
            else:
                skipped.append(Skipped(o.uri, not_a_video(result.message)))
                forget(o.uri, o.etag)
    return candidates, skipped, probes


def sweep_scratch(older_than_s: float = 0.0) -> None:
    """Delete scratch copies not used for ``older_than_s`` and held by no process."""
    now = time.time()
    for p in scratch_dir().iterdir():
        if p.suffix == ".lock" or p.name.startswith("."):
            continue
        try:
            if now - p.stat().st_atime >= older_than_s and not _held(p):
                p.unlink(missing_ok=True)
                p.with_name(p.name + ".lock").unlink(missing_ok=True)
        except FileNotFoundError:
            continue
