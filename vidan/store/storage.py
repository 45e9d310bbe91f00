"""Where a report's bytes live: a local folder or an object store, behind one small seam.

The commit protocol needs only five things of a store: read, overwrite, create-if-absent
(the commit point), list and delete. Locally, create-if-absent is a hard link of a fully
written temporary file (``link`` fails when the name exists); on S3 it is a conditional
PUT (``If-None-Match: *``). Parquet goes through a pyarrow filesystem either way.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Optional, Protocol


class OutputError(RuntimeError):
    """The report location cannot be used (not writable, not vidan's, locked by another run)."""


class Storage(Protocol):
    uri: str  # how to show the report's location to a person

    def read(self, key: str) -> Optional[bytes]:
        """The object's bytes, or None when it does not exist."""

    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` whole (readers see the old or the new bytes, never a part)."""

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet; False when it already did."""

    def list(self, prefix: str) -> list[tuple[str, float]]:
        """(name, modified time in seconds) of the objects directly under folder ``prefix``."""

    def delete(self, key: str) -> None: ...

    def arrow(self) -> tuple[object, str]:
        """A pyarrow filesystem and the base path that keys are relative to."""

    def is_empty(self) -> bool:
        """True when nothing is stored at this location (a missing folder is empty)."""


class LocalStorage:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.uri = str(self.root)

    def path(self, key: str) -> Path:
        p = self.root / key
        # keys are built by vidan, never from file names, but a slip must not write outside
        if os.path.commonpath([self.root, os.path.abspath(p)]) != str(self.root):
            raise ValueError(f"key {key!r} leaves the report folder")
        return p

    def read(self, key: str) -> Optional[bytes]:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            blocker = next((p for p in [self.root, *self.root.parents] if p.exists() and not p.is_dir()), self.root)
            raise OutputError(f"cannot write to output folder {self.root}: {blocker} is a file, not a folder") from None

    def _temp(self, key: str, data: bytes) -> Path:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        tmp = self._temp(key, data)
        os.replace(tmp, self.path(key))

    def create(self, key: str, data: bytes) -> bool:
        tmp = self._temp(key, data)
        try:
            os.link(tmp, self.path(key))  # atomic, and fails if the name exists
            _fsync_dir(self.path(key).parent)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def list(self, prefix: str) -> list[tuple[str, float]]:
        d = self.path(prefix) if prefix else self.root
        try:
            with os.scandir(d) as it:
                return sorted((e.name, e.stat().st_mtime) for e in it if e.is_file(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def arrow(self) -> tuple[object, str]:
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), str(self.root)

    def is_empty(self) -> bool:
        if not self.root.exists():
            return True
        if not self.root.is_dir():
            raise OutputError(f"{self.root} is a file, not a folder")
        with os.scandir(self.root) as it:
            return next(it, None) is None

    def mkdir(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write to output folder {self.root}: {e.strerror or e}") from e

    def entries(self) -> list[str]:
        with os.scandir(self.root) as it:
            return sorted(e.name for e in it)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_storage(uri: str | os.PathLike, options: Optional[dict[str, str]] = None) -> Storage:
    """A storage for a local path or a URI such as ``s3://bucket/prefix``."""
    text = os.fspath(uri)
    if isinstance(text, str) and "://" in text and not text.startswith("file://"):
        from vidan.store.objects import ObjectStorage

        return ObjectStorage(text, options or {})
    if isinstance(text, str) and text.startswith("file://"):
        text = text[len("file://"):]
    return LocalStorage(text)
