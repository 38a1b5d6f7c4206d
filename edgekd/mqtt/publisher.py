"""Publish results and stats to an MQTT broker: the real edgekd.sink.ResultSink.

How a result travels:

    publish_result() --> pending (bounded deque) --> sender thread --> paho --> broker PUBACK
                         full: drop oldest, count    only while connected   counted as published

- `publish_result` never blocks and never talks to the network: it appends to a bounded queue
  (`settings.queue_size`, counting pending and in-flight results). When it is full the oldest
  pending result is dropped and counted in `dropped`.
- A sender thread hands results to paho only while connected, at most `inflight_window` at a
  time, in order. A result counts as `published` when the broker acknowledged it (QoS 1/2) or
  paho wrote it to the socket (QoS 0), i.e. in paho's on_publish.
- When the broker goes away, paho keeps the unacknowledged QoS 1/2 results and resends them first
  on reconnect; the sender waits until those are acknowledged before handing over more, so the
  order survives an outage. Unsent QoS 0 results go back to the front of the queue.
- Status: a retained last will `offline` on `<prefix>/<device>/status`, retained `online` on
  every (re)connect, retained `offline` on close.
- Stats go out at QoS 0 when connected and are skipped otherwise (the next one replaces them).
- A refused connection (bad credentials, not authorised, or a broker certificate that fails
  verification) sets `last_error` to a message that names the broker and the fix, is logged, and
  makes `wait_connected` raise BrokerRefusedError. paho keeps retrying with backoff meanwhile.

The queue lives in memory; a later durable outbox (issue 7) can replace `pending` without
changing this interface.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt

from edgekd.mqtt.connection import (
    BrokerRefusedError,
    make_client,
    refusal_message,
    unreachable_message,
)
from edgekd.mqtt.ratelimit import RateLimitedLog
from edgekd.mqtt.settings import MqttSettings
from edgekd.mqtt.topics import Topics
from edgekd.payloads import ResultPayload, StatsPayload

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
STATUS_QOS = 1
STATS_QOS = 0
DEFAULT_INFLIGHT = 20
_POLL_S = 0.01


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int


class MqttPublisher:
    """Results and stats to MQTT. See the module docstring for the guarantees."""

    def __init__(self, settings: MqttSettings, *, inflight_window: int = DEFAULT_INFLIGHT) -> None:
        self.settings = settings
        self.url = settings.broker
        self.topics = Topics(settings.prefix, settings.device_id)
        self._client = make_client(settings)
        self._client.will_set(self.topics.status, OFFLINE, qos=STATUS_QOS, retain=True)
        self._window = max(1, min(inflight_window, settings.queue_size))
        # Room for the status messages next to a full window of results.
        self._client.max_inflight_messages_set(self._window + 4)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish

        self._lock = threading.Lock()  # never held while calling into paho (see _on_publish)
        self._wake = threading.Event()
        self._pending: deque[_Outgoing] = deque()
        self._inflight: dict[int, _Outgoing] = {}
        self._acked_early: set[int] = set()  # on_publish that beat publish() returning its mid
        self._handing = 0
        self._draining = False  # wait for paho's resends before handing over more
        self._connected = False
        self._refused: str | None = None
        self._closing = False
        self._closed = False
        self._started = False
        self._stop_sender = False
        self._sender: threading.Thread | None = None
        self._published = 0
        self._dropped = 0
        self._stats_published = 0
        self._stats_skipped = 0
        self._connects = 0
        self.last_error: str | None = None
        self._warn = RateLimitedLog(log)

    # -- the ResultSink interface ------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and return at once, broker up or not."""
        if self._started:
            return
        self._started = True
        log.info(
            "publishing to MQTT broker %s as client %s under %s/%s/",
            self.url,
            self.settings.client_id,
            self.settings.prefix,
            self.settings.device_id,
        )
        self._client.connect_async(self.url.host, self.url.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="edgekd-mqtt-sender", daemon=True)
        self._sender.start()

    def publish_result(self, result: ResultPayload) -> None:
        """Queue a result for its task's topic. Never blocks; a full queue drops the oldest."""
        item = _Outgoing(self.topics.result(result.task), result.to_json(), self.settings.qos)
        with self._lock:
            if self._closing:
                self._dropped += 1
                closed = True
            else:
                closed = False
                full = len(self._pending) + len(self._inflight) + self._handing >= self.settings.queue_size
                if full:
                    self._dropped += 1
                    if self._pending:
                        self._pending.popleft()
                        self._pending.append(item)
                else:
                    self._pending.append(item)
        if closed:
            self._warn(logging.WARNING, "closed", "result published after close() was dropped")
            return
        if full:
            self._warn(
                logging.WARNING,
                "full",
                f"MQTT queue full ({self.settings.queue_size} results, broker {self.url} "
                f"{'connected' if self._connected else 'away'}): dropping the oldest; {self.dropped} dropped so far",
            )
        self._wake.set()

    def publish_stats(self, stats: StatsPayload) -> None:
        """Publish stats at QoS 0 if connected; otherwise skip them (counted in stats_skipped)."""
        if not self._connected or self._closing:
            with self._lock:
                self._stats_skipped += 1
            return
        info = self._client.publish(self.topics.stats, stats.to_json(), qos=STATS_QOS)
        with self._lock:
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._stats_published += 1
            else:
                self._stats_skipped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued, publish retained `offline`, disconnect; all within `timeout`.

        Results still queued when time is up are counted as dropped.
        """
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
        if self._started:
            reserve = min(1.0, timeout / 4)
            while self.queue_depth and time.monotonic() < deadline - reserve:
                self._wake.set()
                time.sleep(_POLL_S)
            if self._connected:
                info = self._client.publish(self.topics.status, OFFLINE, qos=STATUS_QOS, retain=True)
                while not info.is_published() and self._connected and time.monotonic() < deadline:
                    time.sleep(_POLL_S)
                if not info.is_published():
                    log.warning("could not publish retained 'offline' to %s within %.1f s", self.url, timeout)
            else:
                log.warning("MQTT broker %s is away: 'offline' not published at close", self.url)
            self._stop_sender = True
            self._wake.set()
            if self._sender is not None:
                self._sender.join(timeout=1.0)
            self._client.disconnect()
            self._client.loop_stop()
        with self._lock:
            left = len(self._pending) + len(self._inflight) + self._handing
            self._dropped += left
            self._pending.clear()
            self._inflight.clear()
            self._connected = False
            self._closed = True
        if left:
            log.warning("%d results were not delivered to %s before close and are counted as dropped", left, self.url)
        log.info("MQTT closed: %d results published, %d dropped", self._published, self._dropped)

    # -- state --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queue_depth(self) -> int:
        """Results waiting: not yet handed to paho, or handed and not yet acknowledged."""
        with self._lock:
            return len(self._pending) + len(self._inflight) + self._handing

    @property
    def in_flight(self) -> int:
        """Results handed to paho and not yet acknowledged (part of queue_depth)."""
        with self._lock:
            return len(self._inflight) + self._handing

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def published(self) -> int:
        return self._published

    @property
    def stats_published(self) -> int:
        return self._stats_published

    @property
    def stats_skipped(self) -> int:
        return self._stats_skipped

    @property
    def connects(self) -> int:
        """Successful connections so far (1 after the first, +1 per reconnect)."""
        return self._connects

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected. False on timeout; BrokerRefusedError if the broker refused us."""
        deadline = time.monotonic() + timeout
        while True:
            if self._connected:
                return True
            if self._refused:
                raise BrokerRefusedError(self._refused)
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the sender thread ----------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop_sender:
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._stop_sender:
                self._hand_over()

    def _hand_over(self) -> None:
        """Give pending results to paho, in order, while connected and the window has room."""
        while True:
            with self._lock:
                if (
                    not self._connected
                    or self._draining
                    or not self._pending
                    or len(self._inflight) + self._handing >= self._window
                ):
                    return
                item = self._pending.popleft()
                self._handing += 1
            # Not under self._lock: paho calls on_publish holding its own message lock.
            info = self._client.publish(item.topic, item.payload, qos=item.qos)
            with self._lock:
                self._handing -= 1
                if info.rc == mqtt.MQTT_ERR_NO_CONN and item.qos == 0:
                    self._pending.appendleft(item)  # not sent; try again after reconnecting
                    return
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    self._dropped += 1
                    problem = mqtt.error_string(info.rc)
                elif info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                    self._published += 1
                    problem = None
                else:
                    self._inflight[info.mid] = item
                    problem = None
                # Any other early ack was for a status or stats message: forget it.
                self._acked_early.clear()
            if problem:
                self._warn(logging.ERROR, "publish", f"paho refused a result for {item.topic}: {problem}; dropped")

    # -- paho callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            message = refusal_message(self.url, reason_code, self.settings.username)
            with self._lock:
                self._refused = message
                self.last_error = message
            self._warn(logging.ERROR, "refused", message)
            return
        client.publish(self.topics.status, ONLINE, qos=STATUS_QOS, retain=True)
        with self._lock:
            self._connected = True
            self._refused = None
            self.last_error = None
            self._connects += 1
            # paho resends unacknowledged QoS 1/2 results first; newer ones wait for them.
            self._draining = any(item.qos > 0 for item in self._inflight.values())
            depth = len(self._pending) + len(self._inflight)
        self._warn.reset("away")
        log.info("connected to MQTT broker %s (%d results queued)", self.url, depth)
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            # QoS 0 results paho had not written yet are gone from paho: put them back, in order.
            lost = [(mid, item) for mid, item in self._inflight.items() if item.qos == 0]
            for mid, _ in lost:
                del self._inflight[mid]
            self._pending.extendleft(item for _, item in reversed(lost))
            closing = self._closing
        if was_connected and not closing:
            self._warn(
                logging.WARNING,
                "away",
                f"lost connection to MQTT broker {self.url} ({reason_code}); reconnecting with backoff, "
                f"results wait in the queue (up to {self.settings.queue_size})",
            )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        error = getattr(client, "last_connect_error", None)
        message = unreachable_message(self.url, error)
        with self._lock:
            self.last_error = message
            if isinstance(error, ssl.SSLCertVerificationError):
                self._refused = message  # retrying cannot help until ca_file or the broker changes
        self._warn(logging.WARNING, "unreachable", message + "; retrying with backoff")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Called by paho with its message lock held: take only our own lock, never call paho here.
        with self._lock:
            item = self._inflight.pop(mid, None)
            if item is None:
                if self._handing:
                    self._acked_early.add(mid)
                return
            self._published += 1
            if not self._inflight:
                self._draining = False
        self._wake.set()
