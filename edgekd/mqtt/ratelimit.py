"""Rate-limited warnings: a broker that stays away must not flood the log."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """Log a repeated warning at most once per `interval` seconds, counting the ones skipped."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._skipped[key] = self._skipped.get(key, 0) + 1
                return
            skipped = self._skipped.pop(key, 0)
            self._last[key] = now
        suffix = f" (repeated {skipped} more times)" if skipped else ""
        self._log.log(level, "%s%s", message, suffix)

    def reset(self, key: str) -> None:
        """Forget `key`, so that its next warning is logged at once (e.g. after recovering)."""
        with self._lock:
            self._last.pop(key, None)
            self._skipped.pop(key, None)
