"""MQTT 5 against a real mosquitto (which speaks it), checked with `mosquitto_sub -V mqttv5`;
the fallback to 3.1.1 against the embedded amqtt broker, which speaks only 3.1.1."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone

import pytest

from edgekd.mqtt.broker import EmbeddedBroker
from edgekd.mqtt.connection import make_client
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import SCHEMA_VERSION, ResultPayload
from payload_factory import make_result

pytestmark = pytest.mark.integration

DEVICE = "mq5"
# retained flag, content type, message expiry, payload format, user properties, topic, payload
V5_FORMAT = "%r\t%C\t%E\t%F\t%P\t%t\t%p"


def _wait_for_an_answer(answers: list, seconds: float) -> None:
    """Until the client's on_connect has appended an answer, or `seconds` have passed."""
    deadline = datetime.now().timestamp() + seconds
    while not answers and datetime.now().timestamp() < deadline:
        subprocess.run(["sleep", "0.05"])


def result(seq: int) -> ResultPayload:
    return make_result(seq, device=DEVICE)


def sub_v5(port: int, topic: str, count: int, timeout: int = 8) -> subprocess.Popen:
    argv = ["stdbuf", "-oL", "mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(port), "-t", topic,
            "-q", "1", "-C", str(count), "-W", str(timeout), "-F", V5_FORMAT, "-d"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # returns once subscribed, so that nothing published later is missed
        if line.startswith("Subscribed (mid:"):
            return proc
    raise AssertionError("mosquitto_sub -V mqttv5 did not subscribe")


def lines(proc: subprocess.Popen) -> list[list[str]]:
    out, _ = proc.communicate(timeout=15)
    return [line.split("\t", 6) for line in out.splitlines() if line.count("\t") >= 6]


@pytest.mark.parametrize("protocol", ["auto", "5"])
def test_results_stats_and_status_carry_mqtt5_properties(mosquitto, protocol) -> None:
    settings = MqttSettings(url=mosquitto.url, device_id=DEVICE, protocol=protocol, result_expiry=600)
    results = sub_v5(mosquitto.port, f"edgekd/{DEVICE}/keyword", count=2)
    pub = MqttPublisher(settings)
    pub.start()
    try:
        assert pub.wait_connected(5)
        assert f"as edgekd-{DEVICE} (p5," in mosquitto.log_text()  # mosquitto logs MQTT 5 as p5
        pub.publish_result(result(0))
        pub.publish_result(result(1))
        got = lines(results)
        assert len(got) == 2, got
        for n, (retained, ctype, expiry, fmt, users, topic, payload) in enumerate(got):
            assert (retained, ctype, fmt, topic) == ("0", "application/json", "1", f"edgekd/{DEVICE}/keyword")
            assert 590 <= int(expiry) <= 600  # the broker counts down from result_expiry
            assert users == f"schema:urn:edgekd:schema:v{SCHEMA_VERSION}:result schema_version:{SCHEMA_VERSION}"
            assert json.loads(payload)["seq"] == n
        status = lines(sub_v5(mosquitto.port, f"edgekd/{DEVICE}/status", count=1, timeout=3))
        assert [(s[0], s[1], s[3], s[6]) for s in status] == [("1", "text/plain", "1", "online")]
        stats_sub = sub_v5(mosquitto.port, f"edgekd/{DEVICE}/stats", count=1, timeout=5)
        from edgekd.payloads import StatsPayload

        pub.publish_stats(StatsPayload(
            device=DEVICE, time=datetime.now(timezone.utc), uptime_s=1, source="test", source_state="running",
            audio_seconds=1, dropped_audio_samples=0, results_dropped=0, queue_depth=0, broker_connected=True,
            cpu_percent=1, rss_mb=1, models=[],
        ))
        stats = lines(stats_sub)
        assert [(s[1], s[2], s[4]) for s in stats] == [
            ("application/json", "", f"schema:urn:edgekd:schema:v{SCHEMA_VERSION}:stats schema_version:{SCHEMA_VERSION}")
        ]
    finally:
        pub.close(timeout=3)


def test_protocol_311_sends_no_properties(mosquitto) -> None:
    sub = sub_v5(mosquitto.port, f"edgekd/{DEVICE}/keyword", count=1)
    pub = MqttPublisher(MqttSettings(url=mosquitto.url, device_id=DEVICE, protocol="3.1.1", result_expiry=600))
    pub.start()
    try:
        assert pub.wait_connected(5)
        pub.publish_result(result(0))
        got = lines(sub)
        assert [(g[1], g[2], g[4]) for g in got] == [("", "", "")]
    finally:
        pub.close(timeout=3)
    assert f"as edgekd-{DEVICE} (p2," in mosquitto.log_text()  # mosquitto logs MQTT 3.1.1 as p2


def test_auto_falls_back_to_311_on_a_broker_without_mqtt5(mosquitto_sub_at) -> None:
    """amqtt answers an MQTT 5 CONNECT with 'unsupported protocol version'; "auto" then connects
    with 3.1.1 and the owner's on_connect sees only that success."""
    with EmbeddedBroker() as broker:
        client = make_client(MqttSettings(url=broker.url, device_id=DEVICE, protocol="auto", reconnect_min=0.1))
        answers = []
        client.on_connect = lambda c, u, f, reason, p: answers.append(str(reason))
        client.connect_async(broker.host, broker.port)
        client.loop_start()
        try:
            _wait_for_an_answer(answers, 5)
            assert answers == ["Success"]
            assert not client.mqtt5
            client.publish(f"edgekd/{DEVICE}/keyword", b"{}", qos=1, retain=True).wait_for_publish(3)
        finally:
            client.disconnect()
            client.loop_stop()
        got = mosquitto_sub_at(broker.port).sub(f"edgekd/{DEVICE}/keyword", count=1, timeout=3)
        assert [(m.payload, m.retained) for m in got] == [("{}", True)]


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [False, True])
def test_auto_falls_back_when_a_broker_never_answers_an_mqtt5_connect_with_a_will(mosquitto_sub_at, persistent) -> None:
    """The daemon's CONNECT carries its status will. amqtt misreads an MQTT 5 CONNECT with a will as
    3.1.1 and neither answers nor closes; "auto" must give up on MQTT 5 after its CONNACK timeout
    (here the 5 s keepalive) and connect with 3.1.1, will included."""
    with EmbeddedBroker() as broker:
        settings = MqttSettings(url=broker.url, device_id=DEVICE, protocol="auto", reconnect_min=0.1, keepalive=5)
        client = make_client(settings, persistent=persistent)
        client.will_set(client.topics.status, b"offline", qos=1, retain=True)
        answers = []
        client.on_connect = lambda c, u, f, reason, p: answers.append(str(reason))
        client.connect_async(broker.host, broker.port, settings.keepalive)
        client.loop_start()
        try:
            _wait_for_an_answer(answers, 20)
            assert answers == ["Success"]
            assert not client.mqtt5
        finally:
            client._sock_close()  # drop the connection without DISCONNECT: the will must fire
            client.loop_stop()
        got = mosquitto_sub_at(broker.port).sub(f"edgekd/{DEVICE}/status", count=1, timeout=5)
        assert [m.payload for m in got] == ["offline"]


def test_protocol_5_on_a_broker_without_it_says_what_to_set() -> None:
    from edgekd.mqtt.connection import refusal_message

    with EmbeddedBroker() as broker:
        settings = MqttSettings(url=broker.url, device_id=DEVICE, protocol="5", reconnect_min=0.1)
        client = make_client(settings)
        answers = []
        client.on_connect = lambda c, u, f, reason, p: answers.append(reason)
        client.connect_async(broker.host, broker.port)
        client.loop_start()
        try:
            _wait_for_an_answer(answers, 5)
        finally:
            client.disconnect()
            client.loop_stop()
    assert answers and answers[0].is_failure
    message = refusal_message(settings.broker, answers[0])
    assert "Unsupported protocol version" in message and 'protocol = "auto"' in message


@pytest.mark.slow
def test_the_last_will_is_text_plain_over_mqtt5(mosquitto) -> None:
    import signal
    import sys

    script = (
        "import sys, time\n"
        "from edgekd.mqtt.publisher import MqttPublisher\n"
        "from edgekd.mqtt.settings import MqttSettings\n"
        "p = MqttPublisher(MqttSettings(url=sys.argv[1], device_id='will5', protocol='5', keepalive=5))\n"
        "p.start(); assert p.wait_connected(5); print('up', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, mosquitto.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        sub = sub_v5(mosquitto.port, "edgekd/will5/status", count=2, timeout=10)  # retained online, then the will
        proc.send_signal(signal.SIGKILL)
        got = lines(sub)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert [(g[6], g[1], g[3]) for g in got] == [("online", "text/plain", "1"), ("offline", "text/plain", "1")]
