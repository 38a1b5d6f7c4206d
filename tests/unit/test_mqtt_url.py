"""The broker URL parser: every accepted form, every refusal, and properties over random input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.mqtt.url import BrokerUrl, BrokerUrlError, parse_broker_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt://broker.lan:1884", BrokerUrl("broker.lan", 1884)),
        ("mqtt://broker.lan", BrokerUrl("broker.lan", 1883)),
        ("mqtts://broker.lan", BrokerUrl("broker.lan", 8883, tls=True)),
        ("MQTTS://broker.lan:9999/", BrokerUrl("broker.lan", 9999, tls=True)),
        ("localhost", BrokerUrl("localhost", 1883)),
        ("10.0.0.5:1999", BrokerUrl("10.0.0.5", 1999)),
        ("[::1]:1883", BrokerUrl("::1", 1883)),
        ("mqtt://[fe80::1]", BrokerUrl("fe80::1", 1883)),
        ("mqtts://[2001:db8::5]:8884", BrokerUrl("2001:db8::5", 8884, tls=True)),
        ("  embedded  ", BrokerUrl("127.0.0.1", 0, embedded=True)),
        ("embedded:18830", BrokerUrl("127.0.0.1", 18830, embedded=True)),
        ("my_host-1", BrokerUrl("my_host-1", 1883)),
    ],
)
def test_accepted_forms(text: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("http://broker", "not supported"),
        ("ws://broker:9001", "not supported"),
        ("mqtt://", "host is missing"),
        ("mqtt://:1883", "host is missing"),
        ("mqtt://broker:0", "outside 1..65535"),
        ("mqtt://broker:70000", "outside 1..65535"),
        ("mqtt://broker:http", "not a number"),
        ("::1", "brackets"),
        ("mqtt://[::1", "not closed"),
        ("mqtt://[nope]:1883", "not an IPv6 address"),
        ("mqtt://[::1]x", "unexpected"),
        ("mqtt://broker/topic", "path"),
        ("mqtt://broker?x=1", "path"),
        ("mqtt://bro ker", "spaces"),
        ("mqtt://-bad-.lan", "not a valid host name"),
        ("mqtt://999.1.1.1", "not a valid IPv4"),
        ("embedded:x", "not a number"),
        ("mqtt:/broker", "followed by '://'"),
    ],
)
def test_refusals_name_the_url_and_the_expected_form(text: str, says: str) -> None:
    with pytest.raises(BrokerUrlError) as info:
        parse_broker_url(text)
    message = str(info.value)
    assert says in message
    assert repr(text) in message or repr(text.strip()) in message
    assert "expected mqtt://HOST[:PORT]" in message


def test_credentials_are_refused_without_echoing_them() -> None:
    with pytest.raises(BrokerUrlError) as info:
        parse_broker_url("mqtts://alice:s3cret-pw@broker.lan:8883")
    message = str(info.value)
    assert "s3cret-pw" not in message and "alice" not in message
    assert "config file or the environment" in message
    assert "mqtts://***@broker.lan:8883" in message


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: not s.isdigit())
_hostname = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_port = st.integers(1, 65535)


@given(host=st.one_of(_hostname, _ipv4, _ipv6), port=_port, tls=st.booleans())
def test_a_url_round_trips_through_its_string_form(host: str, port: int, tls: bool) -> None:
    url = BrokerUrl(host, port, tls=tls)
    assert parse_broker_url(str(url)) == url


@given(host=st.one_of(_hostname, _ipv4), port=_port)
def test_host_port_without_scheme_is_plain_mqtt(host: str, port: int) -> None:
    assert parse_broker_url(f"{host}:{port}") == BrokerUrl(host, port, tls=False)


@given(host=_ipv6, tls=st.booleans())
def test_ipv6_default_ports(host: str, tls: bool) -> None:
    scheme = "mqtts" if tls else "mqtt"
    assert parse_broker_url(f"{scheme}://[{host}]").port == (8883 if tls else 1883)


@settings(max_examples=500)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_broker_url_error_only(text: str) -> None:
    try:
        url = parse_broker_url(text)
    except BrokerUrlError as exc:
        assert "expected" in str(exc)
    else:
        assert 0 <= url.port <= 65535
        assert url.host
        assert not any(c in url.host for c in "/@?# ")


@given(user=st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), password=st.from_regex(r"[A-Za-z0-9!$%]{6,20}", fullmatch=True), host=_hostname)
def test_credentials_never_appear_in_the_error(user: str, password: str, host: str) -> None:
    with pytest.raises(BrokerUrlError) as info:
        parse_broker_url(f"mqtt://{user}:{password}@{host}:1883")
    assert password not in str(info.value).replace(host, "")
