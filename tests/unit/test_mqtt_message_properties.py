"""MQTT 5 message properties are built and packed once per topic, and pack to what a fresh build gives."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edgekd.mqtt.connection import make_client
from edgekd.mqtt.settings import MqttSettings


def test_cached_properties_pack_as_freshly_built_ones() -> None:
    for expiry in (None, 3600):
        client = make_client(MqttSettings(url="mqtt://127.0.0.1:1", device_id="dev", protocol="5", result_expiry=expiry),
                             persistent=True)  # fmt: skip
        t = client.topics
        assert t is not None
        for topic in (t.result("keyword"), t.result("emotion"), t.stats, t.status):
            props = client.message_properties(topic)
            fresh = client._build_message_properties(topic)
            assert props is not None and fresh is not None
            assert props.pack() == fresh.pack() and str(props) == str(fresh)
            assert client.message_properties(topic) is props
        assert (b"\x02\x00\x00\x0e\x10" in client.message_properties(t.result("keyword")).pack()) == bool(expiry)
        assert client.message_properties("elsewhere/topic") is None


def test_none_over_mqtt_3_1_1() -> None:
    client = make_client(MqttSettings(url="mqtt://127.0.0.1:1", device_id="dev", protocol="3.1.1"), persistent=True)
    assert client.protocol == mqtt.MQTTv311
    assert client.topics is not None and client.message_properties(client.topics.result("keyword")) is None
