"""A one-line progress indication on stderr (a bar on a terminal, phase lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
MIN_REDRAW_S = 0.2


class ProgressLine:
    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self._last = 0.0
        self._open = False

    def phase(self, text: str) -> None:
        """A new step: printed as its own line."""
        if not self.enabled:
            return
        self._end_bar()
        print(f"bench: {text}", file=self.stream, flush=True)

    def update(self, fraction: float, text: str) -> None:
        """Progress within the timing step; redrawn in place on a terminal, silent otherwise."""
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last < MIN_REDRAW_S and fraction < 1.0:
            return
        self._last = now
        filled = int(round(BAR_WIDTH * max(0.0, min(1.0, fraction))))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\rbench: [{bar}] {100 * fraction:5.1f} % {text}   ")
        self.stream.flush()
        self._open = True

    def _end_bar(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def close(self) -> None:
        self._end_bar()
