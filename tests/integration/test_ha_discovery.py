"""Home Assistant discovery through the real `edgekd serve` and a real mosquitto, read with
mosquitto_sub: the retained configs appear, a model taken off has its sensors removed (empty
retained payload), and Home Assistant's birth message brings the configs again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekd
from edgekd.mqtt.ha_discovery import HaSensorConfig

pytestmark = pytest.mark.integration

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"
DEVICE = "hatest"
CONFIGS = f"homeassistant/sensor/edgekd_{DEVICE}/+/config"
DEVICE_SENSORS = {"cpu", "memory", "dropped_audio", "results_dropped"}


def per_model(task: str) -> set[str]:
    return {task, f"{task}_confidence", f"{task}_latency", f"{task}_inference"}


def serve(mosquitto, models, *extra) -> subprocess.Popen:
    argv = [sys.executable, "-m", "edgekd", "serve", "--source", str(CLIP), "--broker", mosquitto.url,
            "--device-id", DEVICE, "--ha-discovery", "--stats-interval", "60", *extra]
    for m in models:
        argv += ["--model", str(m)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def object_id(topic: str) -> str:
    return topic.split("/")[-2]


@pytest.fixture
def two_models(tmp_path):
    from onnx_models import energy_model

    return (energy_model(tmp_path / "loud.onnx", task="loudness", name="loud-a"),
            energy_model(tmp_path / "level.onnx", task="level", name="level-b"))


@pytest.mark.slow
def test_configs_are_retained_and_a_removed_model_loses_its_sensors(mosquitto, two_models) -> None:
    loud, level = two_models
    proc = serve(mosquitto, [loud, level])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    retained = mosquitto.sub(CONFIGS, count=20, timeout=2, retained_only=True)
    assert {object_id(m.topic) for m in retained} == per_model("loudness") | per_model("level") | DEVICE_SENSORS
    assert all(m.retained for m in retained)
    for m in retained:
        config = HaSensorConfig.model_validate_json(m.payload)  # the typed schema, exactly
        assert config.device.identifiers == [f"edgekd_{DEVICE}"]
        assert config.availability[0].topic == f"edgekd/{DEVICE}/status"
    label = next(json.loads(m.payload) for m in retained if object_id(m.topic) == "level")
    assert (label["state_topic"], label["json_attributes_topic"]) == (f"edgekd/{DEVICE}/level",) * 2

    # Second run without the `level` model: its four sensors get an empty retained payload.
    watch = mosquitto.subscribe(CONFIGS, count=100, timeout=30)
    proc = serve(mosquitto, [loud])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err

    def cleared(msgs) -> set[str]:
        return {object_id(m.topic) for m in msgs if m.payload == "" and not m.retained}

    msgs = watch.wait_until(lambda msgs: len(cleared(msgs)) >= 4, timeout=5)
    assert cleared(msgs) == per_model("level")
    assert "removed 4 sensors no longer served" in err
    left = mosquitto.sub(CONFIGS, count=20, timeout=2, retained_only=True)
    assert {object_id(m.topic) for m in left} == per_model("loudness") | DEVICE_SENSORS


def test_home_assistant_birth_brings_the_configs_again(mosquitto, two_models) -> None:
    loud, _ = two_models
    proc = serve(mosquitto, [loud], "--realtime", "--loop")
    try:
        first = mosquitto.subscribe(CONFIGS, count=8, timeout=15)
        first.wait()  # the retained set is there: the daemon announced
        again = mosquitto.subscribe(CONFIGS, count=16, timeout=15)  # 8 retained now, then 8 live
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port),
                        "-t", "homeassistant/status", "-m", "online"], check=True)
        msgs = again.wait()
        live = [m for m in msgs if not m.retained]
        assert {object_id(m.topic) for m in live} == per_model("loudness") | DEVICE_SENSORS
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Home Assistant came online" in err
    status = mosquitto.sub(f"edgekd/{DEVICE}/status", count=1, timeout=3, retained_only=True)
    assert [m.payload for m in status] == ["offline"]  # HA shows every sensor unavailable


@pytest.mark.slow
def test_without_the_marker_back_stale_sensors_are_still_cleared(mosquitto_factory, two_models, tmp_path) -> None:
    """A broker whose ACL lets the sweep marker in but never out: the clean-up waits its timeout
    (5 s), says so, and clears what it read back."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite homeassistant/#\ntopic readwrite edgekd/+/+\ntopic write edgekd/+/ha/sweep\n")
    broker = mosquitto_factory(extra_conf=f"acl_file {acl}")
    loud, level = two_models
    proc = serve(broker, [loud, level])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    proc = serve(broker, [loud], "--realtime", "--loop")
    lines = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines.append(proc.stderr.readline())
            if "removed 4 sensors no longer served" in lines[-1]:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    err = "".join(lines) + rest
    assert proc.returncode == 0, err
    assert "did not echo the sweep marker" in err and "removed 4 sensors no longer served" in err
    left = broker.sub(CONFIGS, count=20, timeout=2, retained_only=True)
    assert {object_id(m.topic) for m in left} == per_model("loudness") | DEVICE_SENSORS
