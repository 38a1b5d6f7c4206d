"""Publish results and stats to an MQTT broker: the real edgekd.sink.ResultSink.

How a result travels:

    publish_result() --> outbox (SQLite or memory) --> sender thread --> paho --> broker PUBACK
                         full: drop oldest, count      only while connected   removed from the outbox

- `publish_result` never waits for the network: it puts the result into the outbox
  (edgekd.mqtt.outbox; by default a SQLite file, committed before it returns, so a crash or
  `kill -9` does not lose it). The outbox is bounded (`settings.queue_limit` results, counting
  pending and in-flight ones; `outbox_max_age` seconds): when full the oldest result not yet
  handed to paho is dropped and counted in `dropped`, as are expired ones.
- The sender makes the outbox durable against power loss (`sync`: an fsync of the SQLite WAL, now
  and then a checkpoint) each time it wakes up, within milliseconds of a put, and always before
  handing results over. A result leaves the outbox only when the broker acknowledged it, so after a broker
  outage, a crash, `kill -9` or a power cut, the next start sends what is left, oldest first,
  before anything new. QoS 1 allows a duplicate (same `id`) of a result whose acknowledgement was
  lost; never a gap. The MQTT session is persistent (fixed client id, clean_session False).
- A sender thread hands results to paho only while connected, at most `inflight_window` at a
  time, in order. A result counts as `published` when the broker acknowledged it (QoS 1/2) or
  paho wrote it to the socket (QoS 0), i.e. in paho's on_publish.
- When the broker goes away, paho keeps the unacknowledged QoS 1/2 results and resends them first
  on reconnect; the sender waits until those are acknowledged before handing over more, so the
  order survives an outage. Unsent QoS 0 results go back to the front of the queue.
- Status: a retained last will `offline` on `<prefix>/<device>/status`, retained `online` on
  every (re)connect, retained `offline` on close.
- Stats go out at QoS 0 when connected and are skipped otherwise (the next one replaces them).
- A result the broker's ACL denies: MQTT 5 says so in the PUBACK, and it counts as dropped. MQTT
  3.1.1 has no way to say so (the broker acknowledges it and discards it), so it counts as
  published; `protocol` tells which, and the stats carry it as `acl_denials_visible`.
- A refused connection (bad credentials, not authorised, or a broker certificate that fails
  verification) sets `last_error` to a message that names the broker and the fix, is logged, and
  makes `wait_connected` raise BrokerRefusedError. paho keeps retrying with backoff meanwhile.

`close()` flushes what it can; with the disk outbox the rest stays there for the next start
(not counted as dropped), with the memory outbox (or what a disk outbox held in memory while its
disk failed) it is counted as dropped.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt

from edgekd.mqtt.connection import (
    BrokerRefusedError,
    closed_before_connack_message,
    make_client,
    refusal_message,
    unreachable_message,
)
from edgekd.mqtt.outbox import EXPIRE_EVERY_S, MemoryOutbox, Outbox, default_outbox_path
from edgekd.mqtt.outbox_disk import SqliteOutbox
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
# Two clients with one client id: the broker closes the older connection each time the other
# (re)connects, so both see connections that end soon after they began, each followed by a
# reconnect that succeeds at once (after a broker restart one usually fails first: not a clash).
SHORT_SESSION_S = 30.0  # a connection closed by the broker sooner than this counts as knocked off (> CLASH_RECONNECT_S)
CLASH_AFTER = 3  # short connections in a row before the clash is reported
CLASH_RECONNECT_S = 10  # reconnect no faster than this while the clash lasts (not every second)
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code


def open_outbox(settings: MqttSettings) -> Outbox:
    """The outbox `settings` ask for: SQLite at outbox_path (or the default), or memory."""
    if settings.outbox == "memory":
        return MemoryOutbox(settings.queue_limit, settings.outbox_max_age)
    path = settings.outbox_path or default_outbox_path(settings.device_id)
    return SqliteOutbox(path, settings.queue_limit, settings.outbox_max_age)


class MqttPublisher:
    """Results and stats to MQTT. See the module docstring for the guarantees."""

    def __init__(
        self, settings: MqttSettings, *, inflight_window: int = DEFAULT_INFLIGHT, outbox: Outbox | None = None
    ) -> None:
        self.settings = settings
        self.url = settings.broker
        self.topics = Topics(settings.prefix, settings.device_id)
        self._result_topics: dict[str, str] = {}  # task -> its checked topic
        self.outbox = outbox if outbox is not None else open_outbox(settings)
        try:
            self._client = make_client(settings, persistent=True)
        except BaseException:
            self.outbox.close()
            raise
        self._client.will_set(self.topics.status, OFFLINE, qos=STATUS_QOS, retain=True)
        self._window = max(1, min(inflight_window, settings.queue_limit))
        # Room for the status messages next to a full window of results.
        self._client.max_inflight_messages_set(self._window + 4)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish

        self._lock = threading.Lock()  # never held while calling into paho (see _on_publish)
        self._wake = threading.Event()
        self._cursor = 0  # highest outbox key handed to paho
        self._inflight: dict[int, tuple[int, int, str]] = {}  # paho mid -> (outbox key, qos, topic)
        self._acked: list[int] = []  # outbox keys acknowledged, to be removed by the sender
        self._acked_early: dict[int, bool] = {}  # on_publish that beat publish() returning its mid -> refused
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
        self._refused_by_paho = 0
        self._refused_by_broker = 0  # MQTT 5 PUBACK with an error (e.g. 0x87 not authorised by the ACL)
        self._dropped_at_close = 0
        self._stats_published = 0
        self._stats_skipped = 0
        self._connects = 0
        self._connected_at = 0.0
        self._short_sessions = 0  # connections in a row the broker closed right after accepting
        self.clash: str | None = None  # set while another client seems to use our client id
        self._next_expire = time.monotonic() + EXPIRE_EVERY_S
        self.last_error: str | None = None
        self._warn = RateLimitedLog(log)
        self.run_id = self.outbox.run_id()

    # -- the ResultSink interface ------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and return at once, broker up or not."""
        if self._started:
            return
        self._started = True
        log.info(
            "publishing to MQTT broker %s as client %s under %s/%s/ (outbox: %s, %d waiting)",
            self.url,
            self.settings.client_id,
            self.settings.prefix,
            self.settings.device_id,
            self.outbox.description,
            len(self.outbox),
        )
        self._client.connect_async(self.url.host, self.url.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="edgekd-mqtt-sender", daemon=True)
        self._sender.start()

    def publish_result(self, result: ResultPayload) -> None:
        """Put a result into the outbox for its task's topic. A full outbox drops the oldest."""
        topic = self._result_topics.get(result.task)
        if topic is None:
            topic = self._result_topics[result.task] = self.topics.result(result.task)
        with self._lock:
            closing = self._closing
            if closing:
                self._dropped_at_close += 1
        if closing:
            self._warn(logging.WARNING, "closed", "result published after close() was dropped")
            return
        before = self.outbox.dropped_full
        self.outbox.put(topic, result.to_json(), self.settings.qos)
        if self.outbox.dropped_full != before:
            self._warn(
                logging.WARNING,
                "full",
                f"MQTT outbox full ({self.settings.queue_limit} results, broker {self.url} "
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

        Results still queued when time is up stay in a disk outbox for the next start; a memory
        outbox counts them as dropped.
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
            acked, self._acked = self._acked, []
            self._inflight.clear()
            self._connected = False
            self._closed = True
        self.outbox.remove(acked)
        left = len(self.outbox)
        lost = self.outbox.flush_memory() if left else 0  # only in memory (a memory outbox, or a failed disk)
        if left > lost:
            self.outbox.sync()
            log.warning("%d results not yet delivered to %s stay in outbox %s for the next start",
                        left - lost, self.url, self.outbox.description)
        if lost:
            with self._lock:
                self._dropped_at_close += lost
            if not self.outbox.durable:
                self.outbox.remove(e.key for e in self.outbox.after(0, left))
            log.warning("%d results were not delivered to %s before close and are counted as dropped", lost, self.url)
        self.outbox.close()
        log.info("MQTT closed: %d results published, %d dropped", self._published, self.dropped)

    # -- state --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def protocol(self) -> str:
        """The MQTT version in use ("5" or "3.1.1"; under "auto", what the broker settled on)."""
        return "5" if self._client.mqtt5 else "3.1.1"

    @property
    def queue_depth(self) -> int:
        """Results waiting in the outbox: not yet handed to paho, or handed and not yet acknowledged."""
        with self._lock:
            if self._closed and not self.outbox.durable:
                return 0
            acked = len(self._acked)
        return max(0, len(self.outbox) - acked)

    @property
    def in_flight(self) -> int:
        """Results handed to paho and not yet acknowledged (part of queue_depth)."""
        with self._lock:
            return len(self._inflight) + self._handing

    @property
    def dropped(self) -> int:
        """Results lost: outbox full or expired, refused by paho, or published after/left at close."""
        return (
            self.outbox.dropped_full + self.outbox.dropped_memory + self.outbox.expired + self._refused_by_paho + self._refused_by_broker
            + self._dropped_at_close
        )

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
            try:
                self._forget_acked()
                # durable against power loss within a wake-up of being put, broker there or not
                self.outbox.sync()
                if time.monotonic() >= self._next_expire:
                    self._next_expire = time.monotonic() + EXPIRE_EVERY_S
                    self.outbox.expire()
                if not self._stop_sender:
                    self._hand_over()
            except Exception as exc:  # a disk error must not kill the sender silently
                self._warn(logging.ERROR, "outbox", f"outbox {self.outbox.description}: {exc!r}; retrying")

    def _forget_acked(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
        self.outbox.remove(acked)

    def _hand_over(self) -> None:
        """Give outbox entries to paho, in key order, while connected and the window has room."""
        while True:
            with self._lock:
                room = self._window - len(self._inflight) - self._handing
                if not self._connected or self._draining or room <= 0:
                    return
                cursor = self._cursor
            batch = self.outbox.after(cursor, room, protect=True)  # a full outbox drops newer ones, not these
            if not batch:
                return
            self.outbox.sync()  # durable against power loss before it reaches the broker
            for entry in batch:
                with self._lock:
                    if not self._connected or self._draining:
                        return
                    self._handing += 1
                    self._cursor = entry.key
                # Not under self._lock: paho calls on_publish holding its own message lock.
                info = self._client.publish(entry.topic, entry.payload, qos=entry.qos)
                problem = None
                with self._lock:
                    self._handing -= 1
                    if info.rc == mqtt.MQTT_ERR_NO_CONN and entry.qos == 0:
                        self._cursor = entry.key - 1  # not sent; again after reconnecting
                        return
                    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                        self._refused_by_paho += 1
                        self._acked.append(entry.key)  # gone for good: take it out of the outbox
                        problem = mqtt.error_string(info.rc)
                    elif info.mid in self._acked_early:
                        if self._acked_early.pop(info.mid):
                            self._refused_by_broker += 1
                        else:
                            self._published += 1
                        self._acked.append(entry.key)
                    else:
                        self._inflight[info.mid] = (entry.key, entry.qos, entry.topic)
                    # Any other early ack was for a status or stats message: forget it.
                    self._acked_early.clear()
                if problem:
                    self._warn(logging.ERROR, "publish", f"paho refused a result for {entry.topic}: {problem}; dropped")

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
            self._connected_at = time.monotonic()
            self._refused = None
            self.last_error = self.clash
            self._connects += 1
            # paho resends unacknowledged QoS 1/2 results first; newer ones wait for them.
            self._draining = any(qos > 0 for _, qos, _ in self._inflight.values())
        depth = self.queue_depth
        self._warn.reset("away")
        log.info("connected to MQTT broker %s with MQTT %s (%d results queued)", self.url, self.protocol, depth)
        if self.protocol == "3.1.1" and self._connects == 1:
            log.info(
                "MQTT 3.1.1 cannot report ACL denials: a result the broker's ACL refuses is acknowledged like any "
                "other and counts as published (stats: acl_denials_visible false); MQTT 5 (protocol \"auto\" or "
                "\"5\") counts it as dropped"
            )
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            # QoS 0 results paho had not written yet are gone from paho: send them again, in order.
            lost = [key for key, qos, _ in self._inflight.values() if qos == 0]
            if lost:
                self._inflight = {m: v for m, v in self._inflight.items() if v[1] != 0}
                self._cursor = min(self._cursor, min(lost) - 1)
            closing = self._closing
            lasted = time.monotonic() - self._connected_at
        if was_connected and not closing and self._knocked_off(lasted, reason_code):
            return
        if was_connected and not closing:
            self._warn(
                logging.WARNING,
                "away",
                f"lost connection to MQTT broker {self.url} ({reason_code}); reconnecting with backoff, "
                f"results wait in the outbox (up to {self.settings.queue_limit})",
            )
        elif not closing:
            # Closed before it accepted us: with TLS 1.3 this is how a broker refuses a client
            # certificate (the handshake looked fine to us); otherwise a broker that drops clients.
            message = closed_before_connack_message(self.url, self.settings, reason_code)
            with self._lock:
                self.last_error = message
            self._warn(logging.WARNING, "dropped", message + "; retrying with backoff")

    def _knocked_off(self, lasted: float, reason_code: Any) -> bool:
        """Tell a clash of client ids (two daemons on one device id) from an ordinary outage: the
        broker closes our connection right after accepting it, again and again, or says
        "session taken over". Logs the clash naming the device id and the fix; True if it is one."""
        taken_over = getattr(reason_code, "value", None) == SESSION_TAKEN_OVER
        with self._lock:
            self._short_sessions = self._short_sessions + 1 if lasted < SHORT_SESSION_S else 0
            clash = taken_over or self._short_sessions >= CLASH_AFTER
            ended, self.clash = (self.clash, None) if not clash else (None, self.clash)
        if not clash:
            if ended is not None:  # not under self._lock: never call into paho holding it
                self._client.reconnect_delay_set(self.settings.reconnect_min, self.settings.reconnect_max)  # type: ignore[arg-type]
            return False
        with self._lock:
            how = (
                "the broker says the session was taken over" if taken_over
                else f"{self._short_sessions} connections in a row closed within {SHORT_SESSION_S:.0f} s of being accepted"
            )
            self.clash = (
                f"MQTT broker {self.url} keeps dropping client id {self.settings.client_id!r} ({how}): another client "
                f"uses the same client id, most likely a second edgekd daemon with device_id "
                f"{self.settings.device_id!r}. Give each device its own device_id (or mqtt.client_id); meanwhile "
                f"results are delayed and this daemon reconnects at most every {CLASH_RECONNECT_S} s"
            )
            self.last_error = self.clash
        self._client.reconnect_delay_set(CLASH_RECONNECT_S, max(CLASH_RECONNECT_S, int(self.settings.reconnect_max)))
        self._warn(logging.ERROR, "clash", self.clash)
        return True

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        error = getattr(client, "last_connect_error", None)
        message = unreachable_message(self.url, error)
        with self._lock:
            self.last_error = message
            self._short_sessions = 0  # the broker itself was away: an outage, not a clash of client ids
            if isinstance(error, ssl.SSLCertVerificationError):
                self._refused = message  # retrying cannot help until ca_file or the broker changes
        self._warn(logging.WARNING, "unreachable", message + "; retrying with backoff")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Called by paho with its message lock held: take only our own lock, never call paho here.
        refused = bool(getattr(reason_code, "is_failure", False))
        with self._lock:
            item = self._inflight.pop(mid, None)
            if item is None:
                if self._handing:
                    self._acked_early[mid] = refused
                return
            if refused:
                self._refused_by_broker += 1
            else:
                self._published += 1
            self._acked.append(item[0])  # either way it leaves the outbox: resending cannot help
            if not self._inflight:
                self._draining = False
        self._wake.set()
        if refused:
            self._warn(
                logging.ERROR,
                "rejected",
                f"MQTT broker {self.url} refused a result on {item[2]} ({reason_code}): check that its ACL lets "
                f"user {self.settings.username!r} write there (see examples/mosquitto/acl: the username must be "
                "the device id); the result is dropped and counted",
            )
