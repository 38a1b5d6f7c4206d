"""The embedded (amqtt) broker, checked with mosquitto_sub and the real publisher."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from edgekd.mqtt.broker import EmbeddedBroker, EmbeddedBrokerError
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import ResultPayload
from payload_factory import make_result

pytestmark = pytest.mark.integration

DEVICE = "demo"


def result(seq: int) -> ResultPayload:
    return make_result(seq, device=DEVICE)


@pytest.fixture
def broker():
    with EmbeddedBroker() as b:
        yield b


def test_results_and_retained_status_reach_mosquitto_sub(broker, mosquitto_sub_at) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}" and broker.port > 0
    sub = mosquitto_sub_at(broker.port).subscribe(f"edgekd/{DEVICE}/keyword", count=3, timeout=10, qos=1)
    pub = MqttPublisher(MqttSettings(url=broker.url, device_id=DEVICE, protocol=broker.protocol, reconnect_min=0.1, reconnect_max=0.5))
    pub.start()
    assert pub.wait_connected(5)
    for seq in range(3):
        pub.publish_result(result(seq))
    got = sub.wait()
    assert [m.json()["seq"] for m in got] == [0, 1, 2]
    status = mosquitto_sub_at(broker.port).sub(f"edgekd/{DEVICE}/status", count=1, timeout=3)
    assert [(m.payload, m.retained) for m in status] == [("online", True)]
    pub.close(timeout=3)
    assert pub.published == 3 and pub.dropped == 0
    status = mosquitto_sub_at(broker.port).sub(f"edgekd/{DEVICE}/status", count=1, timeout=3)
    assert [(m.payload, m.retained) for m in status] == [("offline", True)]


def test_a_new_subscriber_gets_only_the_retained_messages_it_asked_for(broker, mosquitto_sub_at) -> None:
    pub = MqttPublisher(MqttSettings(url=broker.url, device_id=DEVICE, protocol=broker.protocol))
    pub.start()
    assert pub.wait_connected(5)
    other = mosquitto_sub_at(broker.port).subscribe("edgekd/#", count=100, timeout=10)  # another client's filter
    got = mosquitto_sub_at(broker.port).sub(f"edgekd/{DEVICE}/status", count=5, timeout=1)
    other.stop()
    pub.close(timeout=2)
    assert [m.payload for m in got] == ["online"]  # once, not once per other subscriber


_VICTIM = """
import sys, time
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
pub = MqttPublisher(MqttSettings(url=sys.argv[1], device_id="victim", keepalive=5, protocol="3.1.1"))
pub.start()
print("connected" if pub.wait_connected(10) else "not connected", flush=True)
time.sleep(60)
"""


def test_last_will_when_a_client_is_killed(broker, mosquitto_sub_at) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _VICTIM, broker.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        sub = mosquitto_sub_at(broker.port).subscribe("edgekd/victim/status", count=2, timeout=10)
        os.kill(proc.pid, signal.SIGKILL)
        got = sub.wait()
    finally:
        proc.kill()
        proc.wait()
    assert [m.payload for m in got] == ["online", "offline"]


def test_a_taken_port_gives_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedBrokerError, match=f"cannot listen on 127.0.0.1:{port}.*embedded:PORT"):
            EmbeddedBroker(port=port).start()


def test_stop_frees_the_port_and_it_can_start_again() -> None:
    first = EmbeddedBroker().start()
    port = first.port
    first.stop()
    assert not first.running
    t0 = time.monotonic()
    with EmbeddedBroker(port=port) as again:
        assert again.url == f"mqtt://127.0.0.1:{port}"
    assert time.monotonic() - t0 < 5


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host="0.0.0.0")
