"""vidan never deletes, replaces or moves anything it did not create, whatever --out names,
and only its own reports are left out of discovery.

Each case runs the real CLI the way a new user would, and compares the whole tree
(names and bytes) before and after.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vidan
from log_guard import check_stderr
from vidan import synth
from vidan.synth import Scene


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _vidan(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "vidan", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    check_stderr(r.stderr, what="vidan " + " ".join(args))
    return r


@pytest.fixture
def home(tmp_path):
    """A folder like a user's home: videos/ with two clips, and a notes file."""
    (tmp_path / "videos").mkdir()
    for i, name in enumerate(("rocket", "coffee")):
        synth.write_video(tmp_path / "videos" / f"{name}.mp4", [Scene(1.0, synth.photo(name))], size=(160, 120),
                          fps=10, seed=i)
    (tmp_path / "notes.txt").write_text("my notes\n")
    return tmp_path


@pytest.mark.parametrize("out", [".", "videos", "videos/..", "{home}"])
def test_an_output_folder_holding_user_files_is_refused_and_nothing_changes(home, out):
    before = _tree(home)
    r = _vidan("analyze", "videos", "--out", out.format(home=home), "--local", cwd=home)
    assert r.returncode == 2, r.stderr
    assert "is not empty and is not a vidan report" in r.stderr and "choose another --out" in r.stderr
    assert "Traceback" not in r.stderr
    assert _tree(home) == before


def test_a_file_as_output_is_refused(home):
    before = _tree(home)
    r = _vidan("analyze", "videos", "--out", "notes.txt", "--local", cwd=home)
    assert r.returncode == 2 and "notes.txt" in r.stderr
    assert _tree(home) == before


def test_report_inside_the_input_folder_is_left_out_but_nothing_else(home):
    cfg = ["--asr", "none", "--segments", "fixed", "--window", "1", "--local", "--quiet"]
    r = _vidan("analyze", ".", "--out", "videos/report", *cfg, cwd=home)
    assert r.returncode == 0, r.stderr
    rep = vidan.load_report(home / "videos" / "report")
    assert sorted(Path(p).name for p in rep.videos.path) == ["coffee.mp4", "rocket.mp4"]
    # a second run from the same place: the report's own parquet files are not inputs
    r = _vidan("analyze", ".", "--out", "videos/report", *cfg, cwd=home)
    assert r.returncode == 0, r.stderr
    rep = vidan.load_report(home / "videos" / "report")
    assert len(rep.videos) == 2
    assert list(rep.skipped[rep.skipped.path.str.endswith("report")].reason) == ["vidan report"]
    # videos a user keeps inside a report folder are still analysed when named
    synth.write_video(home / "videos" / "report" / "mine.mp4", [Scene(1.0, synth.photo("astronaut"))],
                      size=(160, 120), fps=10)
    r = _vidan("analyze", "videos/report/mine.mp4", "--out", "videos/report", *cfg, cwd=home)
    assert r.returncode == 0, r.stderr
    assert (home / "videos" / "report" / "mine.mp4").exists()
    assert len(vidan.load_report(home / "videos" / "report").videos) == 3


def test_runs_never_delete_user_files_inside_a_report(home):
    cfg = ["--asr", "none", "--segments", "fixed", "--window", "1", "--local", "--quiet"]
    assert _vidan("analyze", "videos", "--out", "rep", *cfg, cwd=home).returncode == 0
    for d in ("videos", "segments", "skipped", "_commits"):
        (home / "rep" / d).mkdir(exist_ok=True)
        (home / "rep" / d / "README.txt").write_text("a user's file")
    (home / "rep" / "segments" / "part-mine.parquet").write_bytes(b"not vidan's parquet")
    before = {k: v for k, v in _tree(home).items() if "README" in k or "part-mine" in k}
    assert _vidan("analyze", "videos", "--out", "rep", "--reprocess", *cfg, cwd=home).returncode == 0
    assert {k: v for k, v in _tree(home).items() if "README" in k or "part-mine" in k} == before
