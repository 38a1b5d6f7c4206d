"""How `edgekd serve` answers SIGTERM, SIGINT and SIGHUP.

The first signal stops cleanly: capture stops, buffered audio is classified for as long as the
stop bound allows (`stop_timeout`), the rest is dropped and counted, the sink publishes `offline`.
A second signal stops at once. SIGHUP is a clean stop too: edgekd does not reload its config (a
new config takes a restart). The handlers are in place from the start of `serve`, so a signal
while models load or the broker is awaited stops it cleanly as well, instead of killing it.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
NO_RELOAD = " (edgekd does not reload its config on SIGHUP: restart it to apply a new one)"


class Stoppable(Protocol):
    stop_timeout: float

    def stop(self) -> None: ...

    def force_stop(self) -> None: ...


class StoppedBeforeServing(BaseException):
    """A stop signal came before serving began (a BaseException, so that no `except Exception` hides it)."""

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(f"{signal_name} before serving began")


class StopSignals:
    """Context manager: install the handlers (main thread only), restore the old ones on exit."""

    def __init__(self) -> None:
        self.daemon: Stoppable | None = None
        self.received: list[str] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._old = {}

    def attach(self, daemon: Stoppable) -> None:
        """From now on a signal stops `daemon`."""
        self.daemon = daemon

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        daemon = self.daemon
        if daemon is None:
            log.info("%s: stopping before serving began%s", name, NO_RELOAD if signum == signal.SIGHUP else "")
            raise StoppedBeforeServing(name)
        if len(self.received) > 1:
            log.warning("%s again: stopping now, dropping the audio not yet classified", name)
            daemon.force_stop()
            return
        log.info(
            "%s: stopping within %g s%s; audio not classified by then is dropped (send %s again to stop now)",
            name, daemon.stop_timeout, NO_RELOAD if signum == signal.SIGHUP else "",
            "Ctrl-C" if signum == signal.SIGINT else name,
        )
        daemon.stop()
