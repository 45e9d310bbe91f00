"""Progress as a user sees it: a bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from vidan.progress import Progress
from vidan.records import FAILED, OK


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(bar: Progress) -> None:
    bar.parts_total = 4
    bar.started()
    bar.part_done()
    bar.part_done()
    bar.update(OK)
    bar.part_done()
    bar.part_done()
    bar.update(FAILED)
    bar.close()


def test_a_log_gets_whole_lines_with_counts_and_the_time_left():
    log = io.StringIO()
    _run(Progress(2, enabled=True, stream=log, every_s=0.0))
    text = log.getvalue()
    assert "\r" not in text  # no redraws in a file
    lines = text.splitlines()
    assert lines[0] == "loading models for 2 file(s)"
    assert lines[1].startswith("analysing: 0/2 files (0 ok, 0 partial, 0 failed), parts 1/4, ")
    assert "left" in lines[1]  # 1 of 4 parts done: an estimate
    assert lines[-1].startswith("analysing: 2/2 files (1 ok, 0 partial, 1 failed), parts 4/4, ")
    assert "left" not in lines[-1]
    assert len(lines) == 7  # one a step, and the end not said twice


def test_a_log_is_not_flooded_but_always_hears_the_end():
    log = io.StringIO()
    _run(Progress(2, enabled=True, stream=log, every_s=3600.0))
    lines = log.getvalue().splitlines()
    assert lines == [lines[0], lines[-1]] and lines[-1].startswith("analysing: 2/2 files")


def test_a_terminal_gets_the_bar():
    term = _Terminal()
    _run(Progress(2, enabled=True, stream=term))
    assert "\r" in term.getvalue() and "2/2" in term.getvalue()


def test_quiet_or_nothing_to_do_says_nothing():
    for enabled, total in ((False, 2), (True, 0)):
        log = io.StringIO()
        bar = Progress(total, enabled=enabled, stream=log, every_s=0.0)
        _run(bar)
        assert log.getvalue() == "" and bar.counts[OK] == 1
