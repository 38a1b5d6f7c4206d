"""`listen` and `Listener` against a real mosquitto, fed by the real publisher."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest

from edgekd.mqtt.connection import BrokerRefusedError, BrokerUnreachableError
from edgekd.mqtt.listen import Listener, listen
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.received import Received
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import ResultPayload
from payload_factory import make_result

pytestmark = pytest.mark.integration

DEVICE = "kitchen"


def result(seq: int, label: str = "cough") -> ResultPayload:
    return make_result(seq, device=DEVICE, model="wav2tiny-cough", model_version="2", task="cough", label=label,
                       score=0.875, detected=True, event="detection", inference=0.8, pipeline=4.5)


def settings_for(url: str, **over: object) -> MqttSettings:
    fields: dict = dict(url=url, device_id=DEVICE, reconnect_min=0.1, reconnect_max=0.5)
    fields.update(over)
    return MqttSettings(**fields)


def run_listen(settings: MqttSettings, **kwargs: object) -> tuple[threading.Thread, io.StringIO, list[int]]:
    out = io.StringIO()
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(listen(settings, out=out, **kwargs)), daemon=True)
    thread.start()
    return thread, out, code


def wait_for_text(out: io.StringIO, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in out.getvalue():
        assert time.monotonic() < deadline, f"{text!r} not in output:\n{out.getvalue()}"
        time.sleep(0.02)


@pytest.fixture
def publisher(mosquitto):
    pub = MqttPublisher(settings_for(mosquitto.url))
    pub.start()
    assert pub.wait_connected(5)
    yield pub
    pub.close(timeout=2)


def test_table_for_people(mosquitto, publisher) -> None:
    thread, out, code = run_listen(settings_for(mosquitto.url), count=2, timeout=10)
    wait_for_text(out, "online (retained)")  # subscribed: the retained status came in
    publisher.publish_result(result(0))
    publisher.publish_result(result(1, label="speech"))
    thread.join(10)
    assert code == [0]
    lines = out.getvalue().splitlines()
    assert lines[0] == f"listening on {mosquitto.url} to edgekd/+/+"
    assert lines[1].split() == ["TIME", "DEVICE", "TASK", "MODEL", "LABEL", "SCORE", "INFER", "PIPELINE"]
    rows = [line.split() for line in lines[2:]]
    assert rows[0][1:] == [DEVICE, "status", "online", "(retained)"]
    assert [r[1:] for r in rows[1:]] == [
        [DEVICE, "cough", "wav2tiny-cough", "cough", "*", "0.88", "0.8ms", "4.5ms"],
        [DEVICE, "cough", "wav2tiny-cough", "speech", "*", "0.88", "0.8ms", "4.5ms"],
    ]


def test_json_lines_for_scripts(mosquitto, publisher) -> None:
    thread, out, code = run_listen(settings_for(mosquitto.url), json_lines=True, count=1, timeout=10)
    wait_for_text(out, '"kind":"status"')
    publisher.publish_result(result(7))
    thread.join(10)
    assert code == [0]
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [o["kind"] for o in objs] == ["status", "result"]
    assert objs[0]["payload"] == "online" and objs[0]["retained"] is True
    got = ResultPayload.model_validate(objs[1]["payload"])
    assert (got.seq, got.label, got.device) == (7, "cough", DEVICE)
    assert objs[1]["topic"] == f"edgekd/{DEVICE}/cough"


def test_status_changes_are_shown_and_the_timeout_ends_it(mosquitto) -> None:
    thread, out, code = run_listen(settings_for(mosquitto.url), count=1, timeout=2)
    wait_for_text(out, "PIPELINE")
    pub = MqttPublisher(settings_for(mosquitto.url))
    pub.start()
    wait_for_text(out, "online")
    pub.close(timeout=2)
    wait_for_text(out, "offline")
    thread.join(5)
    assert code == [1]  # no result within the timeout


def test_listener_callbacks_get_typed_messages(mosquitto, publisher) -> None:
    results: list[Received] = []
    statuses: list[Received] = []
    with Listener(settings_for(mosquitto.url), on_result=results.append, on_status=statuses.append) as listener:
        listener.wait_subscribed(5)
        for seq in range(3):
            publisher.publish_result(result(seq))
        deadline = time.monotonic() + 5
        while len(results) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [r.result.seq for r in results if r.result] == [0, 1, 2]
    assert statuses and statuses[0].status == "online" and statuses[0].device == DEVICE


def test_refused_credentials(mosquitto_factory) -> None:
    broker = mosquitto_factory(users={"viewer": "good"})
    with pytest.raises(BrokerRefusedError, match="refused the connection of user 'viewer'"):
        listen(settings_for(broker.url, username="viewer", password="bad"), timeout=3, out=io.StringIO())


def test_no_broker(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"mqtt://127.0.0.1:{port}"
    with pytest.raises(BrokerUnreachableError, match=f"cannot reach MQTT broker {url}"):
        listen(settings_for(url), timeout=1, out=io.StringIO())
