"""A model's failed windows: counted, logged at a limited rate, and the model stopped if it keeps failing.

A graph that fails on some audio (a Gather whose index follows the input, an output whose size
changes) must not take the stream down: the window is counted and reported and the next one is
tried. A model that fails `FAILURES_TO_STOP` windows in a row is stopped, with its state and error
in the stats, while the other models go on.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

log = logging.getLogger(__name__)

FAILURES_TO_STOP = 10  # failed windows in a row before a model is stopped
FAILURE_LOG_INTERVAL_S = 10.0  # at most one "windows failed" warning per model per interval
STOP_FIX = "fix the model (run `edgekd info` on it) or remove it from the config, then restart edgekd"

ModelState = Literal["running", "failed"]


class ModelFailures:
    """Failed windows of one model."""

    def __init__(
        self,
        model: str,
        limit: int | None = FAILURES_TO_STOP,
        log_interval_s: float = FAILURE_LOG_INTERVAL_S,
        logs: bool = True,
    ) -> None:
        """`limit` None: never stop (classify, which reports per file); `logs` False: the caller reports."""
        self.model = model
        self.limit = limit
        self.logs = logs
        self.log_interval_s = log_interval_s
        self.failed = 0  # windows whose inference failed, in all
        self.in_a_row = 0
        self.error: str | None = None  # the latest failure
        self.state: ModelState = "running"
        self._last_log = -math.inf
        self._unlogged = 0

    @property
    def stopped(self) -> bool:
        return self.state == "failed"

    def succeeded(self) -> None:
        self.in_a_row = 0

    def record(self, problem: str) -> None:
        """Count one failed window; stop the model after `limit` in a row."""
        self.failed += 1
        self.in_a_row += 1
        self.error = problem
        self._unlogged += 1
        if self.limit is not None and self.in_a_row >= self.limit:
            self.state = "failed"
            if not self.logs:
                return
            log.error(
                "model %s stopped after %d failed windows in a row (%d in all): %s; the other models go on (%s)",
                self.model, self.in_a_row, self.failed, problem, STOP_FIX,
            )
            return
        now = time.monotonic()
        if self.logs and now - self._last_log >= self.log_interval_s:
            what = "a window failed" if self._unlogged == 1 else f"{self._unlogged} windows failed since the last report"
            log.warning("model %s: %s (%d in all), skipped: %s", self.model, what, self.failed, problem)
            self._last_log, self._unlogged = now, 0
