"""Progress on stderr: files done, how many failed, parts, and the time left.

On a terminal it is a tqdm bar. Elsewhere (cron, CI, a Ray job's log, ``2> run.log``)
a bar is hundreds of carriage-return redraws in one line, so it becomes a plain line
every ``LINE_EVERY_S`` seconds at most, and one when the run ends.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from vidan.records import FAILED, OK, PARTIAL
from vidan.report import clock

LINE_EVERY_S = 30.0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    """Files done, how many failed, parts, and the time left, on stderr."""

    def __init__(self, total: int, enabled: bool, stream: Optional[TextIO] = None,
                 every_s: float = LINE_EVERY_S):
        self.total = total
        self.counts = {OK: 0, PARTIAL: 0, FAILED: 0}
        # long files are many parts: counting them shows movement before a file completes
        self.parts_total = 0
        self.parts_done = 0
        self._bar = None
        self._stream: Optional[TextIO] = None
        if not (enabled and total):
            return
        stream = stream if stream is not None else sys.stderr
        if _is_terminal(stream):
            from tqdm import tqdm

            # model loading takes a while on a cold start: say so rather than sit silent
            self._bar = tqdm(total=total, unit="file", desc="loading models", dynamic_ncols=True, file=stream)
            self._bar.refresh()
        else:
            self._stream, self._every_s = stream, every_s
            self._t0 = self._started = self._last = time.monotonic()
            self._said: Optional[tuple] = None
            self._line(f"loading models for {total} file(s)")

    def started(self) -> None:
        if self._bar is not None:
            self._bar.set_description("analysing")
        elif self._stream is not None:
            self._started = time.monotonic()

    def update(self, status: str) -> None:
        self.counts[status] += 1
        if self._bar is not None:
            self._postfix()
            self._bar.update(1)
        self._maybe_line()

    def part_done(self) -> None:
        self.parts_done += 1
        if self._bar is not None:
            self._postfix()
            self._bar.refresh()
        self._maybe_line()

    def _postfix(self) -> None:
        self._bar.set_postfix(ok=self.counts[OK], partial=self.counts[PARTIAL], failed=self.counts[FAILED],
                              parts=f"{self.parts_done}/{self.parts_total}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._stream is not None and self._said != self._state():
            self._line(self._status())  # the end is always said, unless the last line said it

    # --- plain lines ----------------------------------------------------------------------

    def _state(self) -> tuple:
        return (sum(self.counts.values()), self.parts_done)

    def _maybe_line(self) -> None:
        if self._stream is not None and time.monotonic() - self._last >= self._every_s:
            self._line(self._status())

    def _status(self) -> str:
        done, now = sum(self.counts.values()), time.monotonic()
        text = (f"analysing: {done}/{self.total} files ({self.counts[OK]} ok, {self.counts[PARTIAL]} partial, "
                f"{self.counts[FAILED]} failed), parts {self.parts_done}/{self.parts_total}, "
                f"{clock(now - self._t0)} elapsed")
        # parts are the finer measure of work done; a file that failed before any part ran
        # has none, so files count when parts say nothing yet
        if 0 < self.parts_done < self.parts_total:
            left = (now - self._started) * (self.parts_total - self.parts_done) / self.parts_done
            text += f", about {clock(left)} left"
        elif 0 < done < self.total and not self.parts_done:
            text += f", about {clock((now - self._started) * (self.total - done) / done)} left"
        return text

    def _line(self, text: str) -> None:
        self._said, self._last = self._state(), time.monotonic()
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe must not end the run
            self._stream = None
