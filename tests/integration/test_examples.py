"""The examples users copy: the COVID rate alert against a real mosquitto with published fake
results, the Node-RED flow and the Home Assistant automation against the topics and entity ids
edgekd really uses, and the mosquitto bridge config against a real pair of mosquittos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edgekd.mqtt.ha_discovery import AnnouncedModel, discovery_configs
from edgekd.mqtt.topics import Topics
from edgekd.payloads import Latency, ResultPayload

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def covid_result(device: str, seq: int, when: datetime, positive: bool) -> bytes:
    label = "positive" if positive else "negative"
    score = 0.8 if positive else 0.7
    return ResultPayload(
        id=f"{device}/abc/{seq}", device=device, model="covid-tiny", model_version="1", model_hash="abc",
        task="covid", label=label, score=score, scores={label: score, ("negative" if positive else "positive"): 1 - score},
        detected=True, event="window", seq=seq, window_start=when - timedelta(seconds=2), window_end=when,
        latency_ms=Latency(inference=3.0, pipeline=5.0),
    ).to_json()


def publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-devices")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_covid_rate_alert_fires_once_the_last_hour_passes_the_threshold(mosquitto) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "python" / "covid_rate_alert.py"), "--broker", mosquitto.url,
         "--threshold", "0.3", "--min-results", "10", "--exit-after", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    assert "listening on edgekd/+/covid" in proc.stderr.readline()
    pub = publisher(mosquitto.port)
    try:
        seq = 0
        # ward1, 08:00-08:29: one positive in ten -> no alert
        for i in range(30):
            pub.publish("edgekd/ward1/covid", covid_result("ward1", seq, T0 + timedelta(minutes=i), i % 10 == 0), qos=1)
            seq += 1
        # ward2: many positives, but fewer results than --min-results -> no alert
        for i in range(5):
            pub.publish("edgekd/ward2/covid", covid_result("ward2", i, T0 + timedelta(minutes=i), True), qos=1)
        # ward1, from 10:00: every other one positive; the 08:xx results have left the hour
        for i in range(20):
            info = pub.publish("edgekd/ward1/covid",
                               covid_result("ward1", seq, T0 + timedelta(hours=2, minutes=i), i % 2 == 0), qos=1)
            seq += 1
        info.wait_for_publish(5)
        out, err = proc.communicate(timeout=15)
    finally:
        pub.loop_stop()
        pub.disconnect()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    alerts = [json.loads(line) for line in out.splitlines()]
    assert len(alerts) == 1
    a = alerts[0]
    assert (a["device"], a["alert"], a["threshold"]) == ("ward1", "covid_positive_rate", 0.3)
    # the first moment it was over: 10 results of the 10:00 hour, 5 of them positive
    assert (a["results"], a["positive"], a["rate"]) == (10, 5, 0.5)
    assert a["at"] == (T0 + timedelta(hours=2, minutes=9)).isoformat()


def test_node_red_flow_is_valid_and_reads_edgekd_topics() -> None:
    flow = json.loads((EXAMPLES / "node-red" / "flow.json").read_text())
    assert isinstance(flow, list) and flow
    ids = {n["id"] for n in flow}
    assert len(ids) == len(flow)
    for node in flow:  # every wire points at a node of the flow
        for outputs in node.get("wires", []):
            assert set(outputs) <= ids, node["id"]
    mqtt_in = [n for n in flow if n["type"] == "mqtt in"]
    assert {n["topic"] for n in mqtt_in} >= {"edgekd/+/+"}
    assert all(n["broker"] in ids for n in mqtt_in)
    assert any(n["type"] == "mqtt-broker" for n in flow)


def test_home_assistant_automation_names_real_entities_and_topics() -> None:
    doc = yaml.safe_load((EXAMPLES / "home-assistant" / "automation.yaml").read_text())
    automations = doc if isinstance(doc, list) else [doc]
    configs = discovery_configs(Topics("edgekd", "kitchen"), [AnnouncedModel("kws", "1", "keyword")])
    entity_ids = {c.default_entity_id for c in configs.values()}
    text = (EXAMPLES / "home-assistant" / "automation.yaml").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"sensor\.edgekd_\w+", code))
    assert used and used <= entity_ids, used - entity_ids
    for a in automations:
        assert a["alias"] and a["triggers"] and a["actions"]
        for t in a["triggers"]:
            if t["trigger"] == "mqtt":
                assert t["topic"] == "edgekd/kitchen/keyword"
