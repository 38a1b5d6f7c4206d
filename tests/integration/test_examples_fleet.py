"""Fleet plumbing from docs/integrations.md on real mosquittos: the example bridge config carries
a device's results, retained status and last will to a central broker, and consumers sharing a
subscription ($share/group/edgekd/+/+) split the results between them, each result once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import ResultPayload
from payload_factory import make_result

pytestmark = pytest.mark.integration

BRIDGE = Path(__file__).resolve().parents[2] / "examples" / "fleet" / "mosquitto-bridge.conf"


def result(device: str, seq: int) -> ResultPayload:
    return make_result(seq, device=device, label="yes", score=0.9, other="no", detected=True, event="detection",
                       pipeline=2.0)


def bridge_conf(central_port: int) -> str:
    """The example file as a user would deploy it, pointed at the test's central broker."""
    lines = BRIDGE.read_text().splitlines()
    assert "address central.example.net:1883" in lines
    return "\n".join(f"address 127.0.0.1:{central_port}" if l.startswith("address ") else l for l in lines)


def test_the_example_bridge_forwards_results_status_and_last_will(mosquitto_factory) -> None:
    central = mosquitto_factory()
    site = mosquitto_factory(extra_conf=bridge_conf(central.port))
    results = central.subscribe("edgekd/site-dev/keyword", count=3, timeout=15, qos=1)
    deadline = time.monotonic() + 10  # the bridge connects within its restart_timeout
    while "edgekd-bridge-site1" not in central.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    # A device on the site broker, in a process of its own so that it can die without closing.
    script = (
        "import sys, time\n"
        "sys.path.insert(0, '..')  # tests/, for payload_factory\n"
        "from edgekd.mqtt.publisher import MqttPublisher\n"
        "from edgekd.mqtt.settings import MqttSettings\n"
        "from test_examples_fleet import result\n"
        "p = MqttPublisher(MqttSettings(url=sys.argv[1], device_id='site-dev', keepalive=5))\n"
        "p.start(); assert p.wait_connected(5)\n"
        "[p.publish_result(result('site-dev', i)) for i in range(3)]\n"
        "print('sent', flush=True); time.sleep(60)\n"
    )
    device = subprocess.Popen([sys.executable, "-c", script, site.url], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent)
    try:
        assert device.stdout is not None and device.stdout.readline().strip() == "sent"
        got = results.wait()
        assert [json.loads(m.payload)["seq"] for m in got] == [0, 1, 2]
        status = central.sub("edgekd/site-dev/status", count=1, timeout=5, retained_only=True)
        assert [m.payload for m in status] == ["online"]
        device.send_signal(signal.SIGKILL)  # no clean close: the site broker sends the last will
        device.wait(timeout=5)
        deadline = time.monotonic() + 20
        payload = "online"
        while payload != "offline" and time.monotonic() < deadline:
            got = central.sub("edgekd/site-dev/status", count=1, timeout=1, retained_only=True)
            payload = got[0].payload if got else payload
        assert payload == "offline"
    finally:
        if device.poll() is None:
            device.kill()


def test_a_shared_subscription_splits_results_between_consumers(mosquitto) -> None:
    group = "$share/workers/edgekd/+/+"
    a = mosquitto.subscribe(group, count=1000, timeout=30, qos=1)
    b = mosquitto.subscribe(group, count=1000, timeout=30, qos=1)
    pub = MqttPublisher(MqttSettings(url=mosquitto.url, device_id="fleet1", reconnect_min=0.1))
    pub.start()
    try:
        assert pub.wait_connected(5)
        for seq in range(40):
            pub.publish_result(result("fleet1", seq))

        def seqs(sub) -> list[int]:
            return [json.loads(m.payload)["seq"] for m in sub.messages() if m.topic.endswith("/keyword")]

        deadline = time.monotonic() + 10
        while len(seqs(a)) + len(seqs(b)) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        got_a, got_b = seqs(a), seqs(b)
        assert sorted(got_a + got_b) == list(range(40))  # every result once, none twice
        assert got_a and got_b  # both consumers took a share
        assert got_a == sorted(got_a) and got_b == sorted(got_b)
    finally:
        pub.close(timeout=3)
