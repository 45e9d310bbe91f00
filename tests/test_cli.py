"""The command line's contract: exit codes and clear errors for things a user gets wrong."""

import subprocess
import sys

import pytest


def vidan(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vidan", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_version_and_help():
    p = vidan("--version")
    assert p.returncode == 0 and p.stdout.startswith("vidan ")
    assert vidan().returncode == 2


def test_missing_input_is_exit_2(tmp_path):
    p = vidan("analyze", tmp_path / "nope", "--out", tmp_path / "out")
    assert p.returncode == 2
    assert "no such file or folder" in p.stderr and "Traceback" not in p.stderr


def test_bad_config_is_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("segments:\n  plan: sideways\n")
    p = vidan("analyze", tmp_path, "--out", tmp_path / "out", "--config", cfg)
    assert p.returncode == 2 and "plan" in p.stderr and "Traceback" not in p.stderr


def test_unwritable_output_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = vidan("analyze", tmp_path, "--out", blocker / "out")
    assert p.returncode == 2 and "cannot write" in p.stderr


def test_bad_taxonomy_is_exit_2(tmp_path):
    tax = tmp_path / "t.yaml"
    tax.write_text("classes: []\n")
    p = vidan("analyze", tmp_path, "--out", tmp_path / "out", "--taxonomy", tax)
    assert p.returncode == 2 and "classes" in p.stderr


@pytest.mark.parametrize("args", [["--segments", "nope"], ["--asr", "nope"]])
def test_bad_choices_are_exit_2(tmp_path, args):
    assert vidan("analyze", tmp_path, "--out", tmp_path / "o", *args).returncode == 2


def test_search_without_report_is_exit_2(tmp_path):
    p = vidan("search", "cats", "--reports", tmp_path)
    assert p.returncode == 2 and "no vidan report" in p.stderr
