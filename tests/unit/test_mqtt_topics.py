"""Topic layout and sanitising: no wildcard or level injection can reach a topic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekd.mqtt.topics import (
    TopicError,
    Topics,
    check_part,
    check_prefix,
    parse_topic,
    sanitise_device_id,
    subscription,
)


def test_layout() -> None:
    t = Topics("edgekd", "pi-kitchen")
    assert t.result("emotion") == "edgekd/pi-kitchen/emotion"
    assert t.status == "edgekd/pi-kitchen/status"
    assert t.stats == "edgekd/pi-kitchen/stats"
    assert subscription("edgekd") == "edgekd/+/+"
    assert Topics("site1/edgekd", "d").result("cough") == "site1/edgekd/d/cough"


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "a b", "a\x00b", "é", "x" * 65])
def test_bad_device_ids_are_refused_by_name(bad: str) -> None:
    with pytest.raises(TopicError, match="device id"):
        Topics("edgekd", bad)


@pytest.mark.parametrize("bad", ["", "/edgekd", "edgekd/", "a//b", "a/+/b", "a/#", "$SYS", "a b"])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="prefix"):
        check_prefix(bad)


@pytest.mark.parametrize("task", ["status", "stats"])
def test_a_task_named_like_a_device_topic_is_refused(task: str) -> None:
    with pytest.raises(TopicError, match="collide"):
        Topics("edgekd", "d").result(task)


def test_a_task_with_a_wildcard_is_refused() -> None:
    with pytest.raises(TopicError, match="task"):
        Topics("edgekd", "d").result("emo/#")


@pytest.mark.parametrize(
    ("hostname", "device"),
    [("raspberrypi", "raspberrypi"), ("pi.local", "pi"), ("My Jetson #2", "My-Jetson-2"), ("", "edgekd"), ("+#/", "edgekd")],
)
def test_hostnames_are_sanitised(hostname: str, device: str) -> None:
    assert sanitise_device_id(hostname) == device


@given(st.text(max_size=200))
def test_sanitised_names_are_always_valid_topic_levels(name: str) -> None:
    device = sanitise_device_id(name)
    assert check_part(device, "device id") == device
    assert not any(c in device for c in "+#/\x00")


@given(st.text(max_size=80))
def test_check_part_accepts_only_single_safe_levels(value: str) -> None:
    try:
        check_part(value, "x")
    except TopicError:
        return
    assert value and not any(c in value for c in "+#/\x00 ")


def test_parse_topic() -> None:
    assert parse_topic("edgekd", "edgekd/d1/status").kind == "status"
    assert parse_topic("edgekd", "edgekd/d1/stats").kind == "stats"
    parsed = parse_topic("site/edgekd", "site/edgekd/d1/cough")
    assert parsed is not None and (parsed.kind, parsed.device, parsed.task) == ("result", "d1", "cough")
    assert parse_topic("edgekd", "other/d1/status") is None
    assert parse_topic("edgekd", "edgekd/d1/a/b") is None
