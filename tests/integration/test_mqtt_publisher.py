"""MqttPublisher against a real mosquitto, checked with mosquitto_sub."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import jsonschema
import pytest

from edgekd.mqtt.connection import BrokerRefusedError
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.schema import all_schemas
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import ModelStats, ResultPayload, StatsPayload
from payload_factory import make_result

pytestmark = pytest.mark.integration

DEVICE = "pi-test"
RESULTS = f"edgekd/{DEVICE}/emotion"
STATUS = f"edgekd/{DEVICE}/status"
STATS = f"edgekd/{DEVICE}/stats"


def result(seq: int) -> ResultPayload:
    return make_result(seq, device=DEVICE, model="wav2tiny", model_hash="abc123", task="emotion", label="happy",
                       score=0.75, other="sad", detected=True, pipeline=2.0)


def settings_for(url: str, **over: object) -> MqttSettings:
    fields: dict = dict(url=url, device_id=DEVICE, reconnect_min=0.1, reconnect_max=0.4, keepalive=5)
    fields.update(over)
    return MqttSettings(**fields)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def seqs(messages: list) -> list[int]:
    return [m.json()["seq"] for m in messages if m.topic == RESULTS]


def test_results_arrive_on_their_topic_as_valid_json(mosquitto) -> None:
    sub = mosquitto.subscribe(f"edgekd/{DEVICE}/+", count=6, timeout=10, qos=1)
    with MqttPublisher(settings_for(mosquitto.url)) as pub:
        assert pub.wait_connected(5)
        for seq in range(5):
            pub.publish_result(result(seq))
        wait_for(lambda: pub.published == 5, 5, "5 acknowledged results")
        assert pub.queue_depth == 0 and pub.dropped == 0
    messages = sub.wait()
    status = [m for m in messages if m.topic == STATUS]
    assert [m.payload for m in status][:1] == ["online"]
    results = [m for m in messages if m.topic == RESULTS]
    assert seqs(results) == [0, 1, 2, 3, 4]
    schema = all_schemas()["result"]
    for m in results:
        assert m.qos == 1
        jsonschema.validate(m.json(), schema)
        assert ResultPayload.model_validate_json(m.payload).device == DEVICE


def test_status_is_retained_online_then_offline_after_close(mosquitto) -> None:
    pub = MqttPublisher(settings_for(mosquitto.url))
    pub.start()
    assert pub.wait_connected(5)
    online = mosquitto.sub(STATUS, count=1, timeout=3, retained_only=True)
    assert [(m.payload, m.retained) for m in online] == [("online", True)]
    pub.close(timeout=3)
    offline = mosquitto.sub(STATUS, count=1, timeout=3, retained_only=True)
    assert [(m.payload, m.retained) for m in offline] == [("offline", True)]
    assert f"Client edgekd-{DEVICE} disconnected" in mosquitto.log_text()  # a clean DISCONNECT


_VICTIM = """
import sys, time
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
pub = MqttPublisher(MqttSettings(url=sys.argv[1], device_id=sys.argv[2], keepalive=5))
pub.start()
if not pub.wait_connected(10):
    sys.exit("not connected: %s" % pub.last_error)
print("connected", flush=True)
time.sleep(60)
"""


def test_last_will_offline_when_the_publisher_is_killed(mosquitto) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, mosquitto.url, DEVICE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected", proc.stderr.read()
        online = mosquitto.sub(STATUS, count=1, timeout=3)
        assert [m.payload for m in online] == ["online"]
        sub = mosquitto.subscribe(STATUS, count=2, timeout=10)  # retained online, then the will
        os.kill(proc.pid, signal.SIGKILL)
        got = sub.wait()
    finally:
        proc.kill()
        proc.wait()
    assert [m.payload for m in got] == ["online", "offline"]
    after = mosquitto.sub(STATUS, count=1, timeout=3, retained_only=True)
    assert [(m.payload, m.retained) for m in after] == [("offline", True)]


def test_stats_topic(mosquitto) -> None:
    sub = mosquitto.subscribe(STATS, count=1, timeout=10)
    stats = StatsPayload(
        device=DEVICE, time=datetime.now(timezone.utc), uptime_s=5, source="mic", source_state="running",
        audio_seconds=5, dropped_audio_samples=0, results_dropped=0, queue_depth=0, broker_connected=True,
        cpu_percent=1.2, rss_mb=48.0,
        models=[ModelStats(model="wav2tiny", task="emotion", windows=20, gated=2, published=18, windows_per_s=4.0,
                           inference_ms={"p50": 1.0, "p95": 1.5, "p99": 2.0, "max": 2.5},
                           pipeline_ms={"p50": 2.0, "p95": 2.5, "p99": 3.0, "max": 3.5})],
    )
    with MqttPublisher(settings_for(mosquitto.url)) as pub:
        assert pub.wait_connected(5)
        pub.publish_stats(stats)
        got = sub.wait()
        assert pub.stats_published == 1
    assert len(got) == 1
    assert StatsPayload.model_validate_json(got[0].payload) == stats
    jsonschema.validate(got[0].json(), all_schemas()["stats"])


def first_seqs(messages: list) -> list[int]:
    """Result seqs in order of first arrival: QoS 1 allows a redelivery (same id) after an outage."""
    seen: dict[str, int] = {}
    for m in messages:
        if m.topic == RESULTS:
            body = m.json()
            seen.setdefault(body["id"], body["seq"])
    return list(seen.values())


def _outage(mosquitto_factory, queue_size: int, before: int, during: int):
    """Publish `before` results, stop the broker, publish `during`, restart it.

    mosquitto keeps sessions across the restart (persistence) and mosquitto_sub holds a persistent
    QoS 1 session, so what it receives is exactly what reached the broker. Returns the seqs in
    order of first arrival, the publisher, and its queue depth and drops during the outage.
    """
    broker = mosquitto_factory(persistence=True)
    expected = before + min(during, queue_size)
    sub = broker.subscribe(RESULTS, count=1000, timeout=30, qos=1, client_id="checker")
    pub = MqttPublisher(settings_for(broker.url, queue_size=queue_size))
    pub.start()
    assert pub.wait_connected(5)
    for seq in range(before):
        pub.publish_result(result(seq))
    wait_for(lambda: pub.published == before, 5, f"{before} results before the outage")
    sub.wait_until(lambda got: len(first_seqs(got)) == before, 5)
    broker.stop()
    wait_for(lambda: not pub.connected, 5, "the publisher to notice the outage")
    for seq in range(before, before + during):
        pub.publish_result(result(seq))
    depth_during, dropped_during = pub.queue_depth, pub.dropped
    time.sleep(0.5)  # a few reconnect attempts fail meanwhile
    broker.start()
    wait_for(lambda: pub.published == expected, 10, "the queued results after the restart")
    got = sub.wait_until(lambda got: len(first_seqs(got)) >= expected, 10)
    sub.stop()
    pub.close(timeout=3)
    return first_seqs(got), pub, depth_during, dropped_during


def test_results_queued_during_an_outage_arrive_in_order_without_gaps(mosquitto_factory) -> None:
    got, pub, depth, dropped = _outage(mosquitto_factory, queue_size=100, before=10, during=15)
    assert depth == 15 and dropped == 0
    assert got == list(range(25))
    assert pub.connects == 2 and pub.dropped == 0 and pub.published == 25


def test_queue_overflow_during_an_outage_drops_the_oldest_and_counts(mosquitto_factory) -> None:
    got, pub, depth, dropped = _outage(mosquitto_factory, queue_size=5, before=4, during=12)
    assert depth == 5 and dropped == 7
    assert got == [0, 1, 2, 3, 11, 12, 13, 14, 15]
    assert pub.dropped == 7 and pub.published == 9


def test_broker_stopped_while_results_stream_in_flight(mosquitto_factory) -> None:
    """Results keep coming while the broker stops and restarts: some are in flight (sent, not
    acknowledged) when it goes. paho resends those first and the publisher holds newer ones back
    until they are acknowledged, so the subscriber sees every seq, in order."""
    broker = mosquitto_factory(persistence=True)
    total = 80
    sub = broker.subscribe(RESULTS, count=1000, timeout=30, qos=1, client_id="checker")
    pub = MqttPublisher(settings_for(broker.url))
    pub.start()
    assert pub.wait_connected(5)

    def produce() -> None:
        for seq in range(total):
            pub.publish_result(result(seq))
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: pub.published >= 15, 5, "the stream to start")
    broker.stop()
    time.sleep(0.2)
    broker.start()
    producer.join()
    wait_for(lambda: pub.published == total, 10, "every result acknowledged")
    got = sub.wait_until(lambda got: len(first_seqs(got)) >= total, 10)
    sub.stop()
    pub.close(timeout=3)
    assert first_seqs(got) == list(range(total))
    assert pub.dropped == 0 and pub.connects == 2


class CuttableLink:
    """A TCP relay between the publisher and mosquitto that can lose traffic like a dropped Wi-Fi
    link: `cut()` silently discards bytes both ways, `drop()` closes the connections."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.cut_now = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.cut_now:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.cut_now = True

    def drop(self) -> None:
        conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.cut_now = False

    def close(self) -> None:
        self._server.close()
        self.drop()


def test_results_lost_on_a_dropped_link_are_resent_before_newer_ones(mosquitto) -> None:
    """The link loses traffic both ways, then drops: results sent meanwhile never reached the
    broker and were never acknowledged. On reconnect paho resends them, and the publisher hands
    over newer ones only once they are acknowledged: the subscriber sees every seq, in order."""
    link = CuttableLink(mosquitto.port)
    total = 100
    sub = mosquitto.subscribe(RESULTS, count=1000, timeout=30, qos=1)
    pub = MqttPublisher(settings_for(f"mqtt://127.0.0.1:{link.port}"))
    pub.start()
    try:
        assert pub.wait_connected(5)

        def produce() -> None:
            for seq in range(total):
                pub.publish_result(result(seq))
                time.sleep(0.004)

        producer = threading.Thread(target=produce)
        producer.start()
        wait_for(lambda: pub.published >= 10, 5, "the stream to start")
        link.cut()
        time.sleep(0.2)
        in_flight_when_cut = pub.in_flight
        link.drop()
        producer.join()
        wait_for(lambda: pub.published == total, 10, "every result acknowledged")
        got = sub.wait_until(lambda got: len(first_seqs(got)) >= total, 10)
    finally:
        sub.stop()
        pub.close(timeout=3)
        link.close()
    assert in_flight_when_cut > 0  # the case this test is about did happen
    assert first_seqs(got) == list(range(total))
    assert pub.dropped == 0 and pub.connects == 2


def test_wrong_credentials_give_a_clear_error(mosquitto_factory, caplog) -> None:
    broker = mosquitto_factory(users={"edge": "right-password"})
    pub = MqttPublisher(settings_for(broker.url, username="edge", password="wrong-password"))
    with caplog.at_level(logging.DEBUG):
        pub.start()
        with pytest.raises(BrokerRefusedError) as info:
            pub.wait_connected(5)
        pub.close(timeout=0.5)
    message = str(info.value)
    assert broker.url in message
    assert "refused the connection of user 'edge'" in message and "password" in message
    assert "wrong-password" not in caplog.text and "wrong-password" not in message
    assert any(r.levelno == logging.ERROR and broker.url in r.getMessage() for r in caplog.records)


def test_right_credentials_publish(mosquitto_factory) -> None:
    broker = mosquitto_factory(users={"edge": "right-password"})
    sub = broker.subscribe(RESULTS, count=1, timeout=10, qos=1)
    with MqttPublisher(settings_for(broker.url, username="edge", password="right-password")) as pub:
        assert pub.wait_connected(5)
        pub.publish_result(result(0))
        wait_for(lambda: pub.published == 1, 5, "the result")
    assert seqs(sub.wait()) == [0]
