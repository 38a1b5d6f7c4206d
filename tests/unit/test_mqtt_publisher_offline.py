"""The publisher with no broker at all: never blocks, bounds its queue, counts every drop."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.mqtt.connection import make_client
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
from edgekd.mqtt.url import BrokerUrlError
from edgekd.payloads import ResultPayload
from payload_factory import make_result


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def result(seq: int) -> ResultPayload:
    return make_result(seq, model_hash="abc", task="emotion", label="calm", score=0.8, other="angry", inference=0.5)


@pytest.fixture
def offline() -> MqttSettings:
    return MqttSettings(url=f"mqtt://127.0.0.1:{closed_port()}", device_id="d", queue_size=5, reconnect_min=0.05,
                        reconnect_max=0.1, outbox="memory")


def queued_seqs(pub: MqttPublisher) -> list[int]:
    return [json.loads(e.payload)["seq"] for e in pub.outbox.after(0, 1000)]


def test_start_and_publish_do_not_wait_for_an_absent_broker(offline: MqttSettings) -> None:
    pub = MqttPublisher(offline)
    t0 = time.monotonic()
    pub.start()
    for seq in range(3):
        pub.publish_result(result(seq))
    assert time.monotonic() - t0 < 0.2
    assert not pub.connected and pub.queue_depth == 3 and pub.dropped == 0
    assert pub.wait_connected(0.3) is False
    assert pub.last_error is not None and "cannot reach MQTT broker" in pub.last_error and offline.url in pub.last_error
    pub.close(timeout=0.2)
    assert pub.dropped == 3 and pub.queue_depth == 0 and pub.published == 0


def test_a_full_queue_drops_the_oldest_and_counts(offline: MqttSettings) -> None:
    pub = MqttPublisher(offline)  # not started: nothing leaves the queue
    for seq in range(12):
        pub.publish_result(result(seq))
    assert pub.queue_depth == 5 and pub.dropped == 7
    assert queued_seqs(pub) == [7, 8, 9, 10, 11]
    pub.close(timeout=0.1)
    assert pub.dropped == 12


def test_results_after_close_are_counted_as_dropped(offline: MqttSettings) -> None:
    pub = MqttPublisher(offline)
    pub.close(timeout=0.1)
    pub.publish_result(result(0))
    assert pub.dropped == 1 and pub.queue_depth == 0


def test_stats_are_skipped_not_queued_while_away(offline: MqttSettings) -> None:
    from edgekd.payloads import StatsPayload

    pub = MqttPublisher(offline)
    stats = StatsPayload(
        device="d", time=datetime.now(timezone.utc), uptime_s=1.0, source="file", source_state="running",
        audio_seconds=1.0, dropped_audio_samples=0, results_dropped=0, queue_depth=0, broker_connected=False,
        cpu_percent=1.0, rss_mb=50.0, models=[],
    )
    pub.publish_stats(stats)
    assert pub.stats_skipped == 1 and pub.queue_depth == 0
    pub.close(timeout=0.1)


def test_embedded_url_must_be_resolved_first() -> None:
    with pytest.raises(BrokerUrlError, match="in-process broker"):
        make_client(MqttSettings(url="embedded", device_id="d"))


@settings(max_examples=60, deadline=None)
@given(queue_size=st.integers(1, 20), n=st.integers(0, 60))
def test_queue_keeps_the_newest_and_counts_the_rest(queue_size: int, n: int) -> None:
    pub = MqttPublisher(MqttSettings(url="mqtt://127.0.0.1:9", device_id="d", queue_size=queue_size, outbox="memory"))
    for seq in range(n):
        pub.publish_result(result(seq))
    kept = min(n, queue_size)
    assert pub.queue_depth == kept and pub.dropped == n - kept
    assert queued_seqs(pub) == list(range(n - kept, n))
    pub.close(timeout=0)
    assert pub.dropped == n and pub.published == 0
