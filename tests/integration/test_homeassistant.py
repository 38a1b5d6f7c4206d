"""edgekd as a real Home Assistant sees it: Home Assistant Core from the package registry, in a venv
of its own, started headless on a fresh configuration, onboarded and given the MQTT integration
through its own APIs, against a mosquitto the test starts; the real `edgekd serve` with a keyword
model, an emotion model and the cough detector gating the COVID model; every check read back
through Home Assistant's websocket API (tests/integration/ha_client.py, run by Home Assistant's
Python).

Not run by default: it needs Home Assistant installed (scripts/test_homeassistant.sh installs it
into ~/.cache/edgekd-ha/<version> and runs this test); about a minute once installed. Asked for with
EDGEKD_HA_TEST=1 or `-m homeassistant`; EDGEKD_HA_PYTHON names another Home Assistant venv's python.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekd

HA_VERSION = "2025.4.4"  # the newest Home Assistant whose Python requirement (>=3.13.0) this machine meets
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.homeassistant]

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("ha_client.py")
MODELS = {
    "keyword": ROOT / "models" / "wav2tiny-keyword.onnx",
    "emotion": ROOT / "models" / "wav2tiny-emotion.onnx",
    "cough": ROOT / "models" / "wav2tiny-cough.onnx",
    "covid": ROOT / "models" / "wav2small-covid.onnx",
}
CLIPS = [
    Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac",
    *sorted((ROOT / "tests" / "fixtures" / "cough").glob("*.flac")),
    Path(edgekd.__file__).parent / "assets" / "YAF_search_happy.flac",
]
DEVICE = "hatest"
NODE = f"edgekd_{DEVICE}"
START_TIMEOUT_S = 600  # the first start installs the integrations' requirements into Home Assistant's venv
WAIT_S = 120  # for Home Assistant to show what edgekd published (a busy 2-core machine)

# object id -> (name, icon, device class, unit, entity category)
PER_TASK = {
    "{task}": ("{title}", "mdi:waveform", "enum", None, None),
    "{task}_confidence": ("{title} confidence", "mdi:percent", None, "%", None),
    "{task}_latency": ("{title} pipeline latency p99", "mdi:timer-outline", "duration", "ms", "diagnostic"),
    "{task}_inference": ("{title} inference latency p99", "mdi:timer-outline", "duration", "ms", "diagnostic"),
}
PER_DEVICE = {
    "cpu": ("CPU", "mdi:cpu-64-bit", None, "%", "diagnostic"),
    "memory": ("Memory", "mdi:memory", "data_size", "MiB", "diagnostic"),
    "dropped_audio": ("Dropped audio", "mdi:microphone-off", None, "samples", "diagnostic"),
    "results_dropped": ("Results dropped", "mdi:message-alert-outline", None, None, "diagnostic"),
}


def expected_sensors(tasks: list[str]) -> dict[str, tuple[str, str, str | None, str | None, str | None]]:
    """unique id -> (name, icon, device class, unit, entity category)."""
    out = {}
    for task in tasks:
        for object_id, (name, *rest) in PER_TASK.items():
            out[f"{NODE}_{object_id.format(task=task)}"] = (name.format(title=task.capitalize()), *rest)
    out.update({f"{NODE}_{k}": v for k, v in PER_DEVICE.items()})
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the parts ---------------------------------------------------------------------------------


def _asked(config: pytest.Config) -> bool:
    markexpr = config.getoption("markexpr") or ""
    return os.environ.get("EDGEKD_HA_TEST") == "1" or re.search(r"(?<!not )\bhomeassistant\b", markexpr) is not None


@pytest.fixture
def ha_python(request: pytest.FixtureRequest) -> Path:
    if not _asked(request.config):
        pytest.skip("installs and runs Home Assistant: scripts/test_homeassistant.sh (or EDGEKD_HA_TEST=1)")
    default = Path.home() / ".cache" / "edgekd-ha" / HA_VERSION / "bin" / "python"
    python = Path(os.environ.get("EDGEKD_HA_PYTHON", default))
    if not python.is_file():
        pytest.fail(f"no Home Assistant venv at {python}: run scripts/test_homeassistant.sh, which installs "
                    f"homeassistant=={HA_VERSION} there", pytrace=False)
    return python


class HomeAssistant:
    """A Home Assistant process on a fresh configuration directory, and ha_client.py against it."""

    def __init__(self, python: Path, config_dir: Path, port: int) -> None:
        self.python, self.config_dir, self.port = python, config_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = config_dir / "home-assistant.log"
        self.token = ""
        config_dir.mkdir(parents=True)
        (config_dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: edgekd test\n  time_zone: UTC\n  unit_system: metric\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {port}\n"
            "logger:\n  default: info\n"
        )
        self.logs: list[str] = []  # of earlier runs on this configuration
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "homeassistant", "--config", str(self.config_dir), "--log-file", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )

    def restart(self) -> None:
        """Stop (SIGTERM: Home Assistant saves its registries and tokens) and start on the same configuration."""
        self.stop()
        self.logs.append(self.log_path.read_text(errors="replace"))
        self.start()

    def log_text(self) -> str:
        return "".join(self.logs) + (self.log_path.read_text(errors="replace") if self.log_path.exists() else "")

    def wait_started(self, timeout: float) -> None:
        """Until the API answers: the onboarding steps on a fresh configuration (only they need no
        token; once onboarded, Home Assistant no longer serves them), `/api/` with the token after."""
        deadline = time.monotonic() + timeout
        if self.token:
            request = urllib.request.Request(f"{self.url}/api/", headers={"Authorization": f"Bearer {self.token}"})
        else:
            request = urllib.request.Request(f"{self.url}/api/onboarding")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Home Assistant exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2)
        raise AssertionError(f"Home Assistant did not answer on {self.url} within {timeout} s:\n{self.log_tail()}")

    def client(self, command: str, *args: Any) -> Any:
        proc = subprocess.run([str(self.python), str(CLIENT), command, self.url, *map(str, args)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"ha_client {command}: {proc.stderr}\n{self.log_tail()}"
        return json.loads(proc.stdout)

    def snapshot(self) -> dict[str, Any]:
        return self.client("snapshot", self.token, NODE)

    def wait_for(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S) -> dict[str, Any]:
        """Poll snapshots until `check` holds; fail naming `what` and showing the last snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            (self.config_dir.parent / "last-snapshot.json").write_text(json.dumps(snap, indent=1))
            if check(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant did not show {what} within {timeout} s; last seen:\n"
                                     f"{json.dumps(summary(snap), indent=1)}")
            time.sleep(1)

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def home_assistant(ha_python: Path, tmp_path: Path) -> Iterator[HomeAssistant]:
    ha = HomeAssistant(ha_python, tmp_path / "ha-config", free_port())
    try:
        yield ha
    finally:
        ha.stop()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """Speech, two coughs, speech: every model has something to say, and the cough gate opens."""
    import soundfile as sf

    from edgekd.audio.decode import decode_file

    pause = np.zeros(8000, dtype=np.float32)
    parts = []
    for path in CLIPS:
        decoded = decode_file(path)
        assert decoded.rate == 16000, path
        parts += [decoded.samples.astype(np.float32), pause]
    out = tmp_path / "speech-coughs-speech.flac"
    sf.write(str(out), np.concatenate(parts), 16000, subtype="PCM_16")
    return out


class Serve:
    """`edgekd serve` with Home Assistant discovery, as a user starts it."""

    def __init__(self, broker_url: str, clip: Path, tasks: list[str]) -> None:
        argv = [sys.executable, "-m", "edgekd", "serve", "--source", str(clip), "--realtime", "--loop",
                "--broker", broker_url, "--device-id", DEVICE, "--ha-discovery", "--stats-interval", "2"]
        for task in tasks:
            argv += ["--model", str(MODELS[task])]
        if "covid" in tasks:
            argv += ["--gate", "covid=cough:cough"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert self.proc.returncode == 0, err
        return err


# -- reading a snapshot ------------------------------------------------------------------------


def by_unique_id(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """unique id -> {"entity": registry entry, "state": state or None}."""
    return {e["unique_id"]: {"entity": e, "state": snap["states"].get(e["entity_id"])} for e in snap["entities"]}


def summary(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "device": snap["device"] and {k: snap["device"][k] for k in ("name", "model", "manufacturer", "sw_version")},
        "entities": {u: (e["entity"]["entity_id"], e["state"] and e["state"]["state"]) for u, e in by_unique_id(snap).items()},
    }


def has_sensors(unique_ids: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda snap: snap["device"] is not None and set(by_unique_id(snap)) == unique_ids


def all_states(pred: Callable[[str], bool], unique_ids: set[str]) -> Callable[[dict[str, Any]], bool]:
    def check(snap: dict[str, Any]) -> bool:
        found = by_unique_id(snap)
        return set(found) == unique_ids and all(e["state"] is not None and pred(e["state"]["state"]) for e in found.values())

    return check


def reported(tasks: list[str]) -> Callable[[dict[str, Any]], bool]:
    """Every label sensor holds a result, and the health sensors a stats message."""
    def check(snap: dict[str, Any]) -> bool:
        found = by_unique_id(snap)
        keys = [f"{NODE}_{t}" for t in tasks] + [f"{NODE}_{t}_latency" for t in tasks] + [f"{NODE}_cpu"]
        return all(k in found and found[k]["state"] is not None
                   and found[k]["state"]["state"] not in ("unknown", "unavailable") for k in keys)

    return check


def unavailable(state: str) -> bool:
    return state == "unavailable"


def available(state: str) -> bool:
    return state != "unavailable"


# -- the test ----------------------------------------------------------------------------------


def test_home_assistant_shows_edgekd(home_assistant: HomeAssistant, mosquitto, clip: Path) -> None:
    ha = home_assistant
    started = time.monotonic()
    ha.wait_started(START_TIMEOUT_S)
    ha.token = ha.client("onboard")["token"]
    entry = ha.client("mqtt", ha.token, mosquitto.host, mosquitto.port)
    assert entry["domain"] == "mqtt" and entry["state"] == "loaded", entry
    print(f"Home Assistant {HA_VERSION} up, onboarded, MQTT set up after {time.monotonic() - started:.0f} s", flush=True)

    tasks = ["keyword", "emotion", "cough", "covid"]
    sensors = expected_sensors(tasks)
    results = mosquitto.subscribe(f"edgekd/{DEVICE}/+", count=100000, timeout=1800)
    serve = Serve(mosquitto.url, clip, tasks)
    try:
        snap = ha.wait_for("edgekd's device, its sensors and a result of every model",
                           lambda s: has_sensors(set(sensors))(s) and reported(tasks)(s))
        check_device(snap, tasks)
        check_entities(snap, sensors)
        check_states_follow(snap, results, tasks)
        shown = {t: by_unique_id(snap)[f"{NODE}_{t}"]["state"]["attributes"]["window_end"] for t in tasks}
        snap = ha.wait_for("a later result of the emotion and cough models", lambda s: all(
            by_unique_id(s)[f"{NODE}_{t}"]["state"]["attributes"]["window_end"] > shown[t] for t in ("emotion", "cough")))
        check_states_follow(snap, results, tasks)
        print("states follow the results; every sensor named, iconed and classed as expected", flush=True)

        ha.restart()
        ha.wait_started(START_TIMEOUT_S)
        snap = ha.wait_for("the sensors back after Home Assistant restarted", all_states(available, set(sensors)))
        print("right after the restart:", {t: by_unique_id(snap)[f"{NODE}_{t}"]["state"]["state"] for t in tasks}, flush=True)
        snap = ha.wait_for("a result of every model after Home Assistant restarted", reported(tasks))
        check_entities(snap, sensors)
        check_states_follow(snap, results, tasks)
        print("Home Assistant restarted: the sensors came back available, and follow the results again", flush=True)

        serve.stop()
        ha.wait_for("every sensor unavailable after a clean stop", all_states(unavailable, set(sensors)))
        assert mosquitto.sub(f"edgekd/{DEVICE}/status", 1, retained_only=True)[0].payload == "offline"

        serve = Serve(mosquitto.url, clip, tasks)
        ha.wait_for("every sensor available again after a restart", all_states(available, set(sensors)))
        serve.stop(signal.SIGKILL)
        ha.wait_for("every sensor unavailable after SIGKILL (the last will)", all_states(unavailable, set(sensors)))
        assert mosquitto.sub(f"edgekd/{DEVICE}/status", 1, retained_only=True)[0].payload == "offline"

        kept = ["keyword", "cough", "covid"]
        serve = Serve(mosquitto.url, clip, kept)
        snap = ha.wait_for("the emotion sensors removed, the others available", all_states(available, set(expected_sensors(kept))))
        assert not any(e.startswith("sensor.") and "emotion" in e for e in snap["states"]), \
            sorted(e for e in snap["states"] if "emotion" in e)
        assert "wav2tiny-emotion" not in snap["device"]["model"], snap["device"]
        err = serve.stop()
        assert "removed 4 sensors no longer served" in err, err
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
    problems = ha_log_problems(ha.log_text())
    assert not problems, "Home Assistant logged about edgekd's entities:\n" + "\n".join(problems)
    print(f"Home Assistant {HA_VERSION}: all checks passed in {time.monotonic() - started:.0f} s", flush=True)


def check_device(snap: dict[str, Any], tasks: list[str]) -> None:
    device = snap["device"]
    assert device["name"] == f"edgekd {DEVICE}", device
    assert device["manufacturer"] == "edgekd", device
    assert device["sw_version"] == edgekd.__version__, device
    for task in tasks:
        assert MODELS[task].stem in device["model"], (task, device["model"])


def check_entities(snap: dict[str, Any], sensors: dict[str, tuple[str, str, str | None, str | None, str | None]]) -> None:
    found = by_unique_id(snap)
    for unique_id, (name, icon, device_class, unit, category) in sensors.items():
        entity, state = found[unique_id]["entity"], found[unique_id]["state"]
        attrs = state["attributes"]
        seen = (entity["original_name"], entity["original_icon"], entity["original_device_class"],
                attrs.get("unit_of_measurement"), entity["entity_category"])
        assert seen == (name, icon, device_class, unit, category), (unique_id, seen)
        assert attrs["friendly_name"] == f"edgekd {DEVICE} {name}", attrs
        assert (attrs.get("icon"), attrs.get("device_class")) == (icon, device_class), attrs
        assert entity["platform"] == "mqtt" and entity["has_entity_name"], entity
        # Entity ids as first added: this Home Assistant predates `default_entity_id` and ignores
        # it, so they come from the device and sensor names (docs/integrations.md says which).
        assert entity["entity_id"] == "sensor." + re.sub(r"[^a-z0-9]+", "_", f"edgekd {DEVICE} {name}".lower()), entity
        if not unique_id.endswith(("_latency", "_inference")):  # the ids automations use are the announced ones
            assert entity["entity_id"] == f"sensor.{unique_id}", entity


def check_states_follow(snap: dict[str, Any], subscription: Any, tasks: list[str]) -> None:
    """Each label sensor shows the result whose window_end its attributes carry, exactly; its
    confidence sensor (updated by the same MQTT message) that result's score; the health sensors
    figures of a stats message that went out. `subscription`: mosquitto_sub on edgekd's topics."""
    found = by_unique_id(snap)
    shown = {task: found[f"{NODE}_{task}"]["state"]["attributes"]["window_end"] for task in tasks}
    health = tuple(float(found[f"{NODE}_{k}"]["state"]["state"]) for k in ("cpu", "memory"))

    def read(messages: list[Any]) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]]]:
        results, stats = {}, []
        for m in messages:
            if m.topic == f"edgekd/{DEVICE}/stats":
                stats.append(m.json())
            elif m.topic.split("/")[-1] in tasks:
                r = m.json()
                results[(r["task"], r["window_end"])] = r
        return results, stats

    def arrived(messages: list[Any]) -> bool:  # mosquitto_sub may print a message after HA showed it
        results, stats = read(messages)
        return set(shown.items()) <= set(results) and any((s["cpu_percent"], s["rss_mb"]) == health for s in stats)

    try:
        results, stats = read(subscription.wait_until(arrived, timeout=10))
    except AssertionError:
        results, stats = read(subscription.messages())
        raise AssertionError(f"Home Assistant shows results {shown} and cpu, memory {health}; over MQTT went "
                             f"{sorted(k for k in results if k[0] in shown)[-8:]} and "
                             f"{[(s['cpu_percent'], s['rss_mb']) for s in stats][-5:]}") from None
    for task in tasks:
        state = found[f"{NODE}_{task}"]["state"]
        attrs = state["attributes"]
        result = results[(task, shown[task])]
        assert state["state"] == result["label"], (state, result)
        assert attrs["options"] == list(result["scores"]), attrs
        for key in ("score", "scores", "detected", "event", "model", "model_version"):
            assert attrs[key] == result[key], (key, attrs, result)
        confidence = found[f"{NODE}_{task}_confidence"]["state"]["state"]
        assert float(confidence) == pytest.approx(round(result["score"] * 100, 1)), (confidence, result)
        p99s = {m["pipeline_ms"]["p99"] for s in stats for m in s["models"] if m["task"] == task}
        assert float(found[f"{NODE}_{task}_latency"]["state"]["state"]) in p99s, task


def ha_log_problems(log: str) -> list[str]:
    """Warnings and errors of Home Assistant that name edgekd's entities, topics or templates."""
    out = []
    for line in log.splitlines():
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) and re.search(r"edgekd|hatest|[Tt]emplate", line):
            out.append(line)
    return out
