"""Hypothesis: the config loader takes any TOML-shaped data and either returns valid Settings or
raises one ConfigError that names a key; it never raises anything else, and never echoes a
password."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.config import ConfigError, Settings, env_overrides, load_settings, mqtt_settings
from edgekd.mqtt.topics import TopicError
from edgekd.mqtt.url import BrokerUrlError

SECRET = "hunter2-SECRET"
KEYS = list(Settings.model_fields) + ["audio.source", "audio.rate", "mqtt.url", "mqtt.qos", "nonsense", "models"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["mic", "off", "events", "all", "-", "mqtt://localhost", "1.5", SECRET]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
SUB_KEYS = {
    "audio": ["source", "rate", "channels", "realtime", "loop", "buffer_seconds", "volume"],
    "defaults": ["mode", "smoothing", "threshold", "refractory", "gate_db"],
    "mqtt": ["url", "qos", "prefix", "device_id", "username", "password", "queue_size", "outbox", "keepalive"],
}


@st.composite
def configs(draw):
    data = {}
    for key in draw(st.lists(st.sampled_from(list(Settings.model_fields) + ["nonsense"]), max_size=5, unique=True)):
        if key in SUB_KEYS:
            sub = draw(st.lists(st.sampled_from(SUB_KEYS[key]), max_size=4, unique=True))
            data[key] = {k: draw(values) for k in sub}
            if draw(st.booleans()):
                data[key] = draw(values)  # a table that is not a table
        elif key == "models":
            data[key] = draw(st.lists(st.dictionaries(st.sampled_from(["path", "hop", "mode", "colour"]), values, max_size=3), max_size=2))
        else:
            data[key] = draw(values)
    return data


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=configs())
def test_any_data_gives_settings_or_one_config_error_naming_a_key(data):
    try:
        s = load_settings(overrides=data, environ={})
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith("config: ") and "\n" not in text
        assert any(k in text for k in list(data) + ["(top level)"]), text
        if isinstance(data.get("mqtt"), dict) and data["mqtt"].get("password") == SECRET:
            assert SECRET not in text
        return
    assert isinstance(s, Settings)
    try:
        mqtt_settings(s)  # the [mqtt] table is checked by MqttSettings, with the same promise
    except ConfigError as exc:
        assert str(exc).startswith("config: mqtt.") and SECRET not in str(exc)


@settings(max_examples=200, deadline=None)
@given(environ=st.dictionaries(
    st.one_of(st.sampled_from(["EDGEKD_DEVICE_ID", "EDGEKD_MQTT__URL", "EDGEKD_MQTT__PASSWORD", "EDGEKD_AUDIO__RATE",
                               "EDGEKD_MQTT__", "EDGEKD___X", "EDGEKD_MODELS", "EDGEKD_AUDIO"]),
              st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=20).map(lambda s: "EDGEKD_" + s)),
    st.text(max_size=20), max_size=4))
def test_any_environment_gives_settings_or_one_config_error(environ):
    try:
        s = load_settings(environ=environ)
        mqtt_settings(s)
    except ConfigError as exc:
        assert str(exc).startswith("config: ") and SECRET not in str(exc)
    assert isinstance(env_overrides(environ), dict)


@settings(max_examples=100, deadline=None)
@given(
    device=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    interval=st.floats(0.1, 3600),
    threads=st.integers(1, 64),
    gate=st.one_of(st.just("off"), st.floats(-200, 0)),
    port=st.integers(1, 65535),
)
def test_valid_settings_load_as_given(device, interval, threads, gate, port):
    s = load_settings(overrides={"device_id": device, "stats_interval": interval, "threads": threads,
                                 "defaults": {"gate_db": gate}, "mqtt": {"url": f"mqtt://broker.lan:{port}"}}, environ={})
    assert (s.device_id, s.stats_interval, s.threads, s.defaults.gate_db) == (device, interval, threads, gate)
    m = mqtt_settings(s)
    assert m.device_id == device and m.broker.port == port and m.client_id == f"edgekd-{device}"


def test_the_errors_the_loader_may_raise_are_user_errors():
    """The CLI prints these as one line (exit 2); the properties above rely on it."""
    from edgekd.cli import _user_error_types

    assert {ConfigError, BrokerUrlError, TopicError} <= set(_user_error_types())
    s = load_settings(overrides={"mqtt": {"url": "mqtt://a b"}}, environ={})
    with pytest.raises(ConfigError, match="mqtt.url"):
        mqtt_settings(s)
