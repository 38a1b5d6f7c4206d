"""Where results go. The daemon talks to this interface; MQTT is the real one."""

from __future__ import annotations

import os
from typing import Protocol

from edgekd.payloads import ResultPayload, StatsPayload


class ResultSink(Protocol):
    def publish_result(self, result: ResultPayload) -> None:
        """Hand a result over. Never blocks: a full queue drops the oldest and counts it."""

    def publish_stats(self, stats: StatsPayload) -> None:
        """Publish the stats payload (not queued across outages; the next one replaces it)."""

    def close(self, timeout: float = 5.0) -> None:
        """Publish retained `offline`, flush what is queued within `timeout`, disconnect."""


class MemorySink:
    """A sink that keeps everything, for tests and `classify`."""

    def __init__(self) -> None:
        self.results: list[ResultPayload] = []
        self.stats: list[StatsPayload] = []
        self.closed = False

    def publish_result(self, result: ResultPayload) -> None:
        self.results.append(result)

    def publish_stats(self, stats: StatsPayload) -> None:
        self.stats.append(stats)

    def close(self, timeout: float = 5.0) -> None:
        self.closed = True


class OutputClosedError(RuntimeError):
    """The reader of `edgekd serve --stdout` went away: no result can be written any more."""


class JsonLinesSink:
    """Results as JSON lines on a text stream (`edgekd serve --stdout`: no broker needed).

    When the reader closes the pipe, publish_result raises OutputClosedError naming how many
    results were written and the first one that was not, so that serve stops with one line
    instead of exiting silently."""

    def __init__(self, stream=None) -> None:
        import sys

        self.stream = stream or sys.stdout
        self.written = 0
        self.broken = False

    def publish_result(self, result: ResultPayload) -> None:
        if self.broken:
            return
        try:
            self.stream.write(result.model_dump_json() + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self._detach()
            raise OutputClosedError(
                f"stdout was closed by the program reading it after {self.written} results; result {result.id} "
                "and later ones were not written: let the reader read to the end (or use MQTT instead of --stdout)"
            ) from None
        self.written += 1

    def _detach(self) -> None:
        """Point the stream's descriptor at /dev/null, so that flushing at exit does not fail again."""
        self.broken = True
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass

    def publish_stats(self, stats: StatsPayload) -> None:
        pass  # stats go to the log

    def close(self, timeout: float = 5.0) -> None:
        if self.broken:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._detach()
