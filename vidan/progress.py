"""The progress bar on stderr: files done, how many failed, parts, and the ETA (tqdm)."""

from __future__ import annotations

from vidan.records import FAILED, OK, PARTIAL


class Progress:
    """A progress bar on stderr: files done, how many failed, and the ETA (tqdm)."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        self.counts = {OK: 0, PARTIAL: 0, FAILED: 0}
        # long files are many parts: counting them shows movement before a file completes
        self.parts_total = 0
        self.parts_done = 0
        if enabled and total:
            from tqdm import tqdm

            # model loading takes a while on a cold start: say so rather than sit silent
            self._bar = tqdm(total=total, unit="file", desc="loading models", dynamic_ncols=True)
            self._bar.refresh()

    def started(self) -> None:
        if self._bar is not None:
            self._bar.set_description("analysing")

    def update(self, status: str) -> None:
        self.counts[status] += 1
        if self._bar is not None:
            self._postfix()
            self._bar.update(1)

    def part_done(self) -> None:
        self.parts_done += 1
        if self._bar is not None:
            self._postfix()
            self._bar.refresh()

    def _postfix(self) -> None:
        self._bar.set_postfix(ok=self.counts[OK], partial=self.counts[PARTIAL], failed=self.counts[FAILED],
                              parts=f"{self.parts_done}/{self.parts_total}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
