"""A one-line progress display on stderr for long work (no dependency, no output in pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`update(done)` redraws "label  done/total  pct  rate/s" at most 5 times a second.

    Silent unless the stream is a terminal, so scripts and logs get only the results."""

    def __init__(self, label: str, total: int, unit: str = "events",
                 stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn < 0.2:
            return
        self._drawn = now
        self._draw(done, now)

    def _draw(self, done: int, now: float) -> None:
        rate = done / max(now - self.started, 1e-9)
        share = f"{100 * done / self.total:5.1f}%" if self.total else ""
        line = (f"{self.label}  {done:,}/{self.total:,} {self.unit}  {share}"
                f"  {rate:,.0f} {self.unit}/s")
        self.stream.write("\r" + line.ljust(78)[:100])
        self.stream.flush()

    def finish(self, done: int | None = None) -> float:
        """Draw the final state, end the line; returns the seconds taken."""
        now = time.monotonic()
        if self.enabled:
            self._draw(self.total if done is None else done, now)
            self.stream.write("\n")
            self.stream.flush()
        return now - self.started
