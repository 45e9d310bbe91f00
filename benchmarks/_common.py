"""What every benchmark script shares: the machine it ran on, its one markdown table, its JSON.

A script measures, puts everything it prints into one JSON-ready dict (``record``), and
prints ``render(record)``. The same dict goes to ``--json PATH`` (by default
``benchmarks/results/<name>.json``), so the README's pasted output can be checked
against the stored figures without running anything again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# the packages whose versions move the figures: decoders, models and their runtimes
PACKAGES = ("vidan", "numpy", "torch", "av", "decord", "faster-whisper", "ctranslate2", "onnxruntime",
            "sentence-transformers", "ray")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _ffmpeg_version() -> str:
    from vidan.media.ffmpeg_bin import ffmpeg_exe

    try:
        out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, timeout=30).stdout
        return out.split()[2] if out.startswith("ffmpeg version") else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        # figures from code that is not in any commit must say so
        dirty = git("status", "--porcelain", "--", "vidan", "workers", "benchmarks").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + (" with uncommitted changes" if dirty else "")) if commit else "unknown"


def machine() -> dict[str, Any]:
    """The machine and software a run measured, taken when the run starts."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {
        "cores": cores, "usable_cores": usable, "memory_gib": _memory_gib(), "cpu": _cpu_model(),
        "python": platform.python_version(), "packages": versions, "ffmpeg": _ffmpeg_version(),
        "commit": _git_commit(),
        # the machine may be shared: the load when the run began says how far to trust the times
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def machine_line(m: dict[str, Any]) -> str:
    cores = f"{m['cores']} cores" + (f" ({m['usable_cores']} usable)" if m["usable_cores"] != m["cores"] else "")
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return (f"Machine: {cores}, {m['memory_gib']} GiB memory, {m['cpu']}; Python {m['python']}, {packages}, "
            f"ffmpeg {m['ffmpeg']}; commit {m['commit']}; run {m['started_utc']}; 1-minute load average "
            f"{m['load_1min']} at start, {m.get('load_1min_end')} at end.")


def header(columns: Sequence[str]) -> str:
    """The two header rows of a markdown table."""
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [header(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells for {len(columns)} columns: {row}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def block(title: str, m: dict[str, Any], columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Title, machine, table: what a script prints and the README carries unedited."""
    return f"{title}\n\n{machine_line(m)}\n\n{table(columns, rows)}"


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--json", type=Path, default=RESULTS / f"{name}.json",
                    help=f"where to write the figures (default benchmarks/results/{name}.json)")
    return ap


def publish(record: dict[str, Any], render, path: Path) -> None:
    """Print the table and write the figures it was made from."""
    record["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    # the table is rendered from the JSON as written, so the file alone reproduces the output
    record = json.loads(json.dumps(record))
    print(render(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())
