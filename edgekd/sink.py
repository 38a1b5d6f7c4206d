"""Where results go. The daemon talks to this interface; MQTT is the real one."""

from __future__ import annotations

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


class JsonLinesSink:
    """Results as JSON lines on a text stream (`edgekd serve --stdout`: no broker needed)."""

    def __init__(self, stream=None) -> None:
        import sys

        self.stream = stream or sys.stdout

    def publish_result(self, result: ResultPayload) -> None:
        self.stream.write(result.model_dump_json() + "\n")
        self.stream.flush()

    def publish_stats(self, stats: StatsPayload) -> None:
        pass  # stats go to the log

    def close(self, timeout: float = 5.0) -> None:
        self.stream.flush()
