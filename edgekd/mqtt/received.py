"""Decode what a subscriber receives under <prefix>/+/+ into typed messages.

One way in (`decode`), one typed object out: a result, a status change, stats, or an invalid
message that says what was wrong with it (a subscriber must not crash on a bad payload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from edgekd.mqtt.topics import parse_topic
from edgekd.payloads import ResultPayload, StatsPayload

Kind = Literal["result", "status", "stats", "invalid"]
STATES = ("online", "offline")


@dataclass(frozen=True)
class Received:
    kind: Kind
    topic: str
    device: str
    retained: bool = False
    result: ResultPayload | None = None
    status: str | None = None
    stats: StatsPayload | None = None
    error: str | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "payload"
    return f"{where}: {err.get('msg', 'invalid')} ({exc.error_count()} problem(s))"


def decode(prefix: str, topic: str, payload: bytes, retained: bool = False) -> Received | None:
    """The message on `topic`, or None if the topic is not an edgekd topic under `prefix`."""
    parsed = parse_topic(prefix, topic)
    if parsed is None:
        return None
    base = {"topic": topic, "device": parsed.device, "retained": retained}
    if parsed.kind == "status":
        state = payload.decode("utf-8", errors="replace").strip()
        if state not in STATES:
            return Received(kind="invalid", error=f"status {state[:40]!r} is not online/offline", **base)
        return Received(kind="status", status=state, **base)
    try:
        if parsed.kind == "stats":
            return Received(kind="stats", stats=StatsPayload.model_validate_json(payload), **base)
        return Received(kind="result", result=ResultPayload.model_validate_json(payload), **base)
    except ValidationError as exc:
        return Received(kind="invalid", error=f"{parsed.kind} payload does not match its schema: {_first_error(exc)}", **base)
