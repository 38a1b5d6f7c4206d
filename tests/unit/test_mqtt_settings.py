"""MqttSettings: defaults, errors that name the key, and credentials that never leak."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgekd.mqtt.settings import MqttCredentialsError, MqttSettings
from edgekd.mqtt.topics import sanitise_device_id

SECRET = "hunter2-very-secret"


def test_defaults() -> None:
    s = MqttSettings()
    assert s.url == "mqtt://localhost:1883" and s.qos == 1 and s.prefix == "edgekd"
    assert s.device_id == sanitise_device_id(socket.gethostname())
    assert s.client_id == f"edgekd-{s.device_id}"
    assert s.broker.port == 1883 and not s.broker.tls
    assert s.password_value() is None


def test_client_id_follows_an_explicit_device_id() -> None:
    assert MqttSettings(device_id="pi2").client_id == "edgekd-pi2"
    assert MqttSettings(device_id="pi2", client_id="mine").client_id == "mine"


def test_password_is_redacted_everywhere() -> None:
    s = MqttSettings(username="alice", password=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert SECRET not in s.model_dump_json()
    assert s.password_value() == SECRET


def test_rejected_values_are_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        MqttSettings(url=f"mqtt://alice:{SECRET}@broker")
    assert SECRET not in str(info.value)


def test_password_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(SECRET + "\nignored\n")
    assert MqttSettings(username="a", password_file=f).password_value() == SECRET
    f.write_text("")
    with pytest.raises(MqttCredentialsError, match="is empty"):
        MqttSettings(username="a", password_file=f).password_value()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"qos": 3}, "qos"),
        ({"queue_size": 0}, "queue_size"),
        ({"unknown": 1}, "unknown"),
        ({"url": "http://x"}, "not supported"),
        ({"device_id": "a/b"}, "device_id"),
        ({"prefix": "a/#"}, "prefix"),
        ({"password": "x"}, "username"),
        ({"username": "u", "password": "x", "password_file": "/etc/hostname"}, "not both"),
        ({"ca_file": "/etc/hostname"}, "mqtts://"),
        ({"tls_insecure": True}, "mqtts://"),
        ({"url": "mqtts://b", "ca_file": "/nonexistent/ca.pem"}, "ca_file '/nonexistent/ca.pem' does not exist"),
        ({"url": "mqtts://b", "key_file": "/etc/hostname"}, "cert_file"),
        ({"reconnect_min": 10, "reconnect_max": 1}, "reconnect_min"),
    ],
)
def test_errors_name_the_key(kwargs: dict, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        MqttSettings(**kwargs)
    assert says in str(info.value)


def test_with_url_keeps_the_rest_and_validates() -> None:
    s = MqttSettings(device_id="d", qos=2, username="u", password=SECRET)
    moved = s.with_url("mqtt://127.0.0.1:4000")
    assert moved.broker.port == 4000 and moved.qos == 2 and moved.password_value() == SECRET
    assert moved.client_id == "edgekd-d"
    with pytest.raises(ValidationError):
        s.with_url("nope://x")
