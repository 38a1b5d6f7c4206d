"""`edgekd listen`: subscribe to <prefix>/+/+ and show results as they arrive.

`Listener` delivers decoded messages to callbacks (the demo uses it in-process); `listen` prints
them, as an aligned table for people or as JSON lines for scripts, until `count` results arrived
or `timeout` passed.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import sys
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any, Callable, TextIO

from edgekd.mqtt.connection import (
    BrokerRefusedError,
    BrokerUnreachableError,
    closed_before_connack_message,
    make_client,
    refusal_message,
    unreachable_message,
    wrong_port_hint,
)
from edgekd.mqtt.ratelimit import RateLimitedLog
from edgekd.mqtt.received import Received, decode
from edgekd.mqtt.settings import MqttSettings
from edgekd.mqtt.topics import subscription
from edgekd.printable import printable, terminal_json

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
SUBSCRIBE_QOS = 1
_POLL_S = 0.02

Callback = Callable[[Received], None]


class Listener:
    """Subscribe to every edgekd device under the prefix and call back per message.

    Callbacks run on paho's network thread; keep them short. `on_message` gets everything
    (results, status, stats, invalid); the specific ones get only their kind.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_message: Callback | None = None,
        on_result: Callback | None = None,
        on_status: Callback | None = None,
        on_stats: Callback | None = None,
        on_invalid: Callback | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.broker
        self.filter = subscription(settings.prefix)
        # Never the daemon's client id: the broker would disconnect one of the two.
        client_id = f"edgekd-listen-{os.getpid()}-{secrets.token_hex(3)}"
        self._client = make_client(settings, client_id=client_id)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._callbacks: dict[str, Callback | None] = {
            "result": on_result,
            "status": on_status,
            "stats": on_stats,
            "invalid": on_invalid,
        }
        self._on_any = on_message
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self.last_error: str | None = None
        self._started = False
        self._warn = RateLimitedLog(log)

    def start(self) -> Listener:
        if not self._started:
            self._started = True
            self._client.connect_async(self.url.host, self.url.port, keepalive=self.settings.keepalive)
            self._client.loop_start()
        return self

    def wait_subscribed(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Wait until the subscription holds; raise BrokerRefusedError or BrokerUnreachableError."""
        deadline = time.monotonic() + timeout
        while not self._subscribed.is_set():
            if self._refused:
                raise BrokerRefusedError(self._refused)
            if time.monotonic() >= deadline:
                raise BrokerUnreachableError(self.last_error or self._no_subscription(timeout))
            time.sleep(_POLL_S)

    def _no_subscription(self, timeout: float) -> str:
        message = f"no subscription on MQTT broker {self.url} within {timeout:g} s"
        if self._client.socket() is not None:  # connected, but no answer to CONNECT or SUBSCRIBE
            message += f"; {wrong_port_hint(self.url)}"
        return message

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def stop(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # paho callbacks (network thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = self.last_error = refusal_message(self.url, reason_code, self.settings.username)
            self._warn(logging.ERROR, "refused", self._refused)
            return
        self._refused = None
        client.subscribe(self.filter, qos=SUBSCRIBE_QOS)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not (self._subscribed.is_set() or self._refused or client.answered):  # closed before any CONNACK
            self.last_error = closed_before_connack_message(self.url, self.settings, reason_code)
            self._warn(logging.WARNING, "dropped", self.last_error + "; retrying")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        error = getattr(client, "last_connect_error", None)
        self.last_error = unreachable_message(self.url, error)
        if isinstance(error, ssl.SSLCertVerificationError):
            self._refused = self.last_error  # retrying cannot help until ca_file or the broker changes
        self._warn(logging.WARNING, "unreachable", self.last_error + "; retrying")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            self._refused = self.last_error = (
                f"MQTT broker {self.url} refused the subscription to {self.filter} ({failed[0]}); "
                "check the broker's ACL for this user"
            )
            self._warn(logging.ERROR, "subscribe", self._refused)
            return
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        received = decode(self.settings.prefix, message.topic, message.payload, bool(message.retain))
        if received is None:
            return
        for callback in (self._on_any, self._callbacks.get(received.kind)):
            if callback is None:
                continue
            try:
                callback(received)
            except Exception:  # a subscriber's bug must not kill paho's thread
                log.exception("listener callback failed for %s", received.topic)


# -- printing ----------------------------------------------------------------------------------

_COLUMNS = (("TIME", 12), ("DEVICE", 12), ("TASK", 8), ("MODEL", 18), ("LABEL", 12), ("SCORE", 5), ("INFER", 8), ("PIPELINE", 8))


def _row(values: list[str]) -> str:
    cells = []
    for (name, width), value in zip(_COLUMNS, values):
        value = printable(value)  # device, task, model and label come from any publisher
        cells.append(value.rjust(width) if name in ("SCORE", "INFER", "PIPELINE") else value.ljust(width))
    return "  ".join(cells).rstrip()


def header() -> str:
    return _row([name for name, _ in _COLUMNS])


def _clock(moment: datetime | None = None) -> str:
    local = (moment or datetime.now().astimezone()).astimezone()
    return local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def format_line(received: Received) -> str | None:
    """One table line for people; None for messages the table leaves out (stats)."""
    if received.kind == "result" and received.result is not None:
        r = received.result
        label = r.label + (" *" if r.detected else "")
        return _row(
            [
                _clock(r.window_end),
                received.device,
                r.task,
                r.model,
                label,
                f"{r.score:.2f}",
                f"{r.latency_ms.inference:.1f}ms",
                f"{r.latency_ms.pipeline:.1f}ms",
            ]
        )
    if received.kind == "status":
        note = " (retained)" if received.retained else ""
        return _row([_clock(), received.device, "status", "", f"{received.status}{note}"])
    if received.kind == "invalid":
        return printable(f"{_clock()}  {received.device}  invalid message on {received.topic}: {received.error}")
    return None


def format_json(received: Received) -> str:
    """One JSON object per line: kind, topic, device, retained, and payload (or error)."""
    obj: dict[str, Any] = {
        "kind": received.kind,
        "topic": received.topic,
        "device": received.device,
        "retained": received.retained,
    }
    if received.result is not None:
        obj["payload"] = received.result.model_dump(mode="json")
    elif received.stats is not None:
        obj["payload"] = received.stats.model_dump(mode="json")
    elif received.status is not None:
        obj["payload"] = received.status
    if received.error is not None:
        obj["error"] = received.error
    return terminal_json(obj, separators=(",", ":"))


def listen(
    settings: MqttSettings,
    json_lines: bool = False,
    count: int | None = None,
    timeout: float | None = None,
    out: TextIO | None = None,
) -> int:
    """Print what arrives until `count` results arrived or `timeout` seconds passed.

    Returns 0 when `count` results arrived (or no count was asked for); 1 when the timeout came
    first. Raises BrokerRefusedError / BrokerUnreachableError when it cannot subscribe.
    """
    if count is not None and count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = out or sys.stdout  # looked up now: sys.stdout may have been replaced since import
    lock = threading.Lock()
    done = threading.Event()
    results = 0

    def show(received: Received) -> None:
        nonlocal results
        line = format_json(received) if json_lines else format_line(received)
        with lock:
            if done.is_set():
                return
            if line is not None:
                out.write(line + "\n")
                out.flush()
            if received.kind == "result":
                results += 1
                if count is not None and results >= count:
                    done.set()

    start = time.monotonic()
    listener = Listener(settings, on_message=show)
    if not json_lines:
        # Before subscribing: retained status messages arrive right after the subscription.
        out.write(f"listening on {listener.url} to {listener.filter}\n{header()}\n")
        out.flush()
    with listener:
        listener.wait_subscribed(CONNECT_TIMEOUT_S if timeout is None else max(0.1, min(timeout, CONNECT_TIMEOUT_S)))
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        try:
            done.wait(remaining)
        except KeyboardInterrupt:
            done.set()
            return 0
        done.set()
    return 0 if count is None or results >= count else 1
