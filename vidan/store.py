"""Writing a report: stage everything, then publish each dataset in one atomic step.

Part files are written under ``OUT/.staging/RUN_ID/`` (readers skip dot-folders), so a
run that dies, even by ``kill -9``, leaves nothing visible. ``publish`` swaps each
staged dataset folder with the live one in a single ``renameat2(RENAME_EXCHANGE)``
call on Linux, so a reader sees either the old complete dataset or the new one, never
a mix; the commit record ``_runs/RUN_ID.json`` is written last. A lock file keeps
two runs from writing one report at once.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from vidan.report import DATASETS, to_table


class OutputError(RuntimeError):
    """The output folder cannot be used (not writable, locked by another run)."""


ROWS_PER_FILE = 50_000
# Rows are buffered so that a row group holds many rows, not one per video; small
# enough that buffered segment rows (three 384-float embeddings each) stay light.
BUFFER_ROWS = 512


class ReportWriter:
    def __init__(self, out: str | Path, run_id: str):
        self.out = Path(out)
        self.run_id = run_id
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write to output folder {self.out}: {e.strerror or e}") from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise OutputError(f"another vidan run is writing to {self.out}") from None
        staging_root = self.out / ".staging"
        # We hold the lock, so any staging left here belongs to a run that died.
        if staging_root.exists():
            shutil.rmtree(staging_root, ignore_errors=True)
        self.staging = staging_root / run_id
        for name in DATASETS:
            (self.staging / name).mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._rows: dict[str, int] = {name: 0 for name in DATASETS}
        self._files: dict[str, list[str]] = {name: [] for name in DATASETS}
        self._buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in DATASETS}

    def write_rows(self, dataset: str, rows: Sequence[dict[str, Any]]) -> None:
        buf = self._buffers[dataset]
        buf.extend(rows)
        if len(buf) >= BUFFER_ROWS:
            self._flush(dataset)

    def _flush(self, dataset: str) -> None:
        buf = self._buffers[dataset]
        if buf:
            self.write_table(dataset, to_table(buf, DATASETS[dataset]))
            buf.clear()

    def write_table(self, dataset: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        schema = DATASETS[dataset]
        table = table.cast(schema) if table.schema != schema else table
        w = self._writers.get(dataset)
        if w is not None and self._rows[dataset] >= ROWS_PER_FILE:
            w.close()
            w = None
        if w is None:
            name = f"part-{self.run_id}-{len(self._files[dataset]):05d}.parquet"
            self._files[dataset].append(name)
            w = pq.ParquetWriter(self.staging / dataset / name, schema, compression="zstd")
            self._writers[dataset] = w
            self._rows[dataset] = 0
        w.write_table(table)
        self._rows[dataset] += table.num_rows

    def publish(self, record: dict[str, Any]) -> Path:
        """Make the staged datasets live, then write the commit record. Returns its path."""
        for name in DATASETS:
            self._flush(name)
        self._close_writers()
        for name in DATASETS:
            staged, live = self.staging / name, self.out / name
            if live.exists():
                _exchange(staged, live)
                shutil.rmtree(staged)  # now holds the previous run's files
            else:
                os.rename(staged, live)
        record = {**record, "files": {k: v for k, v in self._files.items()}}
        runs = self.out / "_runs"
        runs.mkdir(exist_ok=True)
        final = runs / f"{self.run_id}.json"
        tmp = runs / f".{self.run_id}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str), encoding="utf-8")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._cleanup()
        return final

    def abort(self) -> None:
        self._close_writers()
        self._cleanup()

    def _close_writers(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def _cleanup(self) -> None:
        shutil.rmtree(self.out / ".staging", ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "ReportWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._lock_fd is not None:
            self.abort()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (Linux renameat2). Elsewhere: move away, then move in."""
    fn: Optional[Any] = None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        fn = None
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: filesystem without exchange support
            raise OSError(err, os.strerror(err), str(b))
    # Fallback: a short window where the dataset is absent, never one where it is mixed.
    tmp = a.with_name(a.name + ".old")
    os.rename(b, tmp)
    os.rename(a, b)
    os.rename(tmp, a)
