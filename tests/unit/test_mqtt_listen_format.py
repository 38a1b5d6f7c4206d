"""What `edgekd listen` makes of received messages: decoding, the table, JSON lines."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from edgekd.mqtt.listen import format_json, format_line, header
from edgekd.mqtt.received import decode
from edgekd.payloads import Latency, ResultPayload

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def result_bytes(**over: object) -> bytes:
    fields: dict = dict(
        id="pi/abc/3", device="pi", model="wav2tiny", model_version="1", model_hash="abc123abc123",
        task="keyword", label="left", score=0.934, scores={"left": 0.934, "right": 0.066}, detected=True,
        event="detection", seq=3, window_start=WHEN, window_end=WHEN, latency_ms=Latency(inference=1.25, pipeline=3.5),
    )
    fields.update(over)
    return ResultPayload(**fields).to_json()


def test_result_decodes_and_prints_as_an_aligned_row() -> None:
    got = decode("edgekd", "edgekd/pi/keyword", result_bytes())
    assert got is not None and got.kind == "result" and got.result is not None and got.result.seq == 3
    line = format_line(got)
    assert line is not None
    cells = line.split()
    assert cells[1:] == ["pi", "keyword", "wav2tiny", "left", "*", "0.93", "1.2ms", "3.5ms"]
    assert line.index("wav2tiny") == header().index("MODEL")
    # columns line up with the header
    assert line.index("keyword") == header().index("TASK")
    assert line.index("pi") == header().index("DEVICE")


def test_status_and_stats() -> None:
    status = decode("edgekd", "edgekd/pi/status", b"offline", retained=True)
    assert status is not None and status.kind == "status" and status.status == "offline"
    line = format_line(status)
    assert line is not None and "offline (retained)" in line
    bad_stats = decode("edgekd", "edgekd/pi/stats", b'{"device": "pi"}')
    assert bad_stats is not None and bad_stats.kind == "invalid" and "stats payload does not match" in (bad_stats.error or "")


def test_invalid_payloads_are_reported_not_raised() -> None:
    for payload in (b"not json", b"{}", result_bytes()[:-5], json.dumps({"score": 2}).encode()):
        got = decode("edgekd", "edgekd/pi/keyword", payload)
        assert got is not None and got.kind == "invalid" and got.error
        assert "invalid message on edgekd/pi/keyword" in (format_line(got) or "")
    weird = decode("edgekd", "edgekd/pi/status", b"maybe")
    assert weird is not None and weird.kind == "invalid"


def test_foreign_topics_are_ignored() -> None:
    assert decode("edgekd", "homeassistant/sensor/x/config", b"{}") is None
    assert decode("edgekd", "edgekd/pi/keyword/extra", b"{}") is None


def test_json_lines_carry_kind_topic_and_the_payload() -> None:
    got = decode("edgekd", "edgekd/pi/keyword", result_bytes())
    assert got is not None
    obj = json.loads(format_json(got))
    assert obj["kind"] == "result" and obj["topic"] == "edgekd/pi/keyword" and obj["device"] == "pi"
    assert ResultPayload.model_validate(obj["payload"]).label == "left"
    status = decode("edgekd", "edgekd/pi/status", b"online", retained=True)
    assert status is not None
    assert json.loads(format_json(status)) == {
        "kind": "status", "topic": "edgekd/pi/status", "device": "pi", "retained": True, "payload": "online",
    }
