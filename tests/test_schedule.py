"""The scheduling recipes in the README, run exactly as written.

A home folder is laid out as the recipes expect ($HOME/vidan is this checkout, with its
.venv; $HOME/videos the folder to watch); cron's command line and the systemd unit's
ExecStart run as cron and systemd would run them: through /bin/sh, with HOME set.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import vidan
from log_guard import check_stderr
from vidan import synth
from vidan.synth import Scene

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(lang: str, containing: str) -> str:
    for body in re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S):
        if containing in body:
            return body
    raise AssertionError(f"no {lang} block with {containing!r} in README.md")


def cron_command() -> str:
    line = next(ln for ln in _block("cron", "vidan").splitlines() if ln.strip() and not ln.startswith("#"))
    fields = line.split(None, 5)
    assert len(fields) == 6 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5]), line
    return fields[5]


def systemd_exec() -> list[str]:
    line = next(ln for ln in _block("ini", "ExecStart").splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def test_recipes_are_well_formed():
    assert "--wait" in cron_command() and "--wait" in " ".join(systemd_exec())
    timer = _block("ini", "[Timer]")
    assert re.search(r"^OnCalendar=\S", timer, flags=re.M) and "Persistent=true" in timer


@pytest.fixture
def home(tmp_path):
    if not (ROOT / ".venv" / "bin" / "vidan").exists():
        pytest.skip("the recipes call .venv/bin/vidan: run `make install` first")
    (tmp_path / "vidan").symlink_to(ROOT)
    (tmp_path / "videos").mkdir()
    synth.write_video(tmp_path / "videos" / "a.mp4", [Scene(1.5, synth.photo("rocket"))], size=(160, 120), fps=10)
    return tmp_path


def _env(home: Path) -> dict:
    # cron and systemd start with a bare environment: HOME, PATH, little else
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
            **{k: v for k, v in os.environ.items() if k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}}


def test_cron_line_runs_and_reruns_incrementally(home):
    cmd = cron_command()
    for _ in range(2):
        r = subprocess.run(["/bin/sh", "-c", cmd], env=_env(home), capture_output=True, text=True, timeout=600)
        log = (home / "vidan-nightly.log").read_text()
        check_stderr(log, what="the cron job")
        assert r.returncode == 0, (r.stderr, log)
    rep = vidan.load_report(home / "vidan-reports")
    assert len(rep.videos) == 1 and list(rep.videos.status) == ["ok"]
    assert [r["counts"]["new"] for r in rep.runs] == [1, 0]


def test_systemd_service_runs(home):
    shutil.rmtree(home / "vidan-reports", ignore_errors=True)
    r = subprocess.run(systemd_exec(), env=_env(home), capture_output=True, text=True, timeout=600)
    check_stderr(r.stderr, what="the systemd service")
    assert r.returncode == 0, r.stderr
    assert list(vidan.load_report(home / "vidan-reports").videos.status) == ["ok"]
