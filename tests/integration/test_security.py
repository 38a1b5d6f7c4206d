"""Nothing leaked: credentials from a file, the environment or systemd credentials (never argv,
never logged), a wrong password refused with a clear message, the example ACL keeping a device to
its own prefix, and no raw audio on the wire or on disk. Real mosquitto, real `edgekd serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekd
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import ResultPayload, StatsPayload

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 2.1 s
ACL = ROOT / "examples" / "mosquitto" / "acl"
RIGHT = "k-right-Pa55"
WRONG = "k-wrong-Pa55"
USERS = {"dashboard": "d-Pa55", "kitchen": RIGHT}  # mosquitto_sub logs in as the first: dashboard


def serve(broker, model, tmp_path, *extra, env_extra=None, config=None, timeout=60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_") and k != "CREDENTIALS_DIRECTORY"}
    env.update(env_extra or {})
    args = [sys.executable, "-m", "edgekd", "serve", "--model", str(model), "--source", str(CLIP), "--broker",
            broker.url, "--device-id", "kitchen", "--log-level", "debug", *extra]
    if config:
        args += ["--config", str(config)]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
def test_a_wrong_password_from_a_password_file_is_refused_in_one_line_without_echoing_it(mosquitto_factory, energy_onnx, tmp_path):
    broker = mosquitto_factory(users=USERS)
    pw = tmp_path / "pw"
    pw.write_text(WRONG + "\n")
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(f'[mqtt]\nusername = "kitchen"\npassword_file = "{pw}"\n')
    proc = serve(broker, energy_onnx, tmp_path, config=cfg)
    assert proc.returncode == 2
    # the publisher's retry warnings come from another thread and may land after the error line
    errors = [l for l in proc.stderr.splitlines() if l.startswith("edgekd: ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"edgekd: MQTT broker {broker.url} refused the connection of user 'kitchen'")
    assert "password" in errors[0]
    assert "Traceback" not in proc.stderr
    assert WRONG not in proc.stderr and WRONG not in proc.stdout  # not even at debug level


@pytest.mark.slow
@pytest.mark.parametrize("how", ["password_file", "environment", "systemd-credential"])
def test_the_right_password_from_a_file_the_environment_or_systemd_publishes(mosquitto_factory, energy_onnx, tmp_path, how):
    broker = mosquitto_factory(users=USERS)
    sub = broker.subscribe("edgekd/kitchen/loudness", count=5, timeout=30, qos=1)
    cfg = tmp_path / "edgekd.toml"
    env: dict[str, str] = {}
    if how == "password_file":
        (tmp_path / "pw").write_text(RIGHT + "\n")
        cfg.write_text(f'[mqtt]\nusername = "kitchen"\npassword_file = "{tmp_path / "pw"}"\n')
    elif how == "environment":
        cfg.write_text('[mqtt]\nusername = "kitchen"\n')
        env["EDGEKD_MQTT__PASSWORD"] = RIGHT
    else:  # LoadCredential=mqtt-password:/etc/edgekd/credentials/mqtt-password in the unit
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "mqtt-password").write_text(RIGHT + "\n")
        cfg.write_text('[mqtt]\nusername = "kitchen"\n')
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    proc = serve(broker, energy_onnx, tmp_path, config=cfg, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [m.json()["seq"] for m in sub.wait()] == [0, 1, 2, 3, 4]
    assert RIGHT not in proc.stderr and RIGHT not in proc.stdout  # debug log included


def test_the_example_acl_keeps_a_device_to_its_own_prefix(mosquitto_factory, tmp_path):
    broker = mosquitto_factory(users=USERS, extra_conf=f"acl_file {ACL}")
    sub = broker.subscribe("edgekd/#", count=100, timeout=20, qos=1)  # as dashboard: reads everything

    def publish(device: str) -> MqttPublisher:
        s = MqttSettings(url=broker.url, device_id=device, username="kitchen", password=RIGHT, outbox="memory",
                         reconnect_min=0.1, reconnect_max=0.3)
        pub = MqttPublisher(s)
        pub.start()
        assert pub.wait_connected(5)
        from datetime import datetime, timezone

        from edgekd.payloads import Latency

        now = datetime.now(timezone.utc)
        for seq in range(3):
            pub.publish_result(ResultPayload(
                id=f"{device}/h/1-{seq}", device=device, model="m", model_version="1", model_hash="h", task="emotion",
                label="calm", score=1.0, scores={"calm": 1.0}, detected=True, event="window", seq=seq,
                window_start=now, window_end=now, latency_ms=Latency(inference=0, pipeline=0)))
        deadline = time.monotonic() + 5
        while pub.queue_depth and time.monotonic() < deadline:
            time.sleep(0.02)
        return pub

    own = publish("kitchen")
    spoof = publish("bedroom")  # kitchen's credentials, another device's topics
    sub.wait_until(lambda got: sum(m.topic == "edgekd/kitchen/emotion" for m in got) == 3, 10)
    time.sleep(0.5)  # anything the spoofing publisher got through would be here by now
    spoof_dropped = spoof.dropped
    own.close(timeout=2)
    spoof.close(timeout=2)
    topics = {m.topic for m in sub.messages()}
    assert {"edgekd/kitchen/status", "edgekd/kitchen/emotion"} <= topics
    assert not [t for t in topics if t.startswith("edgekd/bedroom/")]
    assert "Denied PUBLISH from edgekd-bedroom" in broker.log_text()
    # over MQTT 5 the broker says so in its PUBACK: the results are counted as dropped, not published
    if spoof._client.protocol == 5:  # noqa: SLF001 (which version "auto" settled on)
        assert spoof_dropped == 3 and spoof.published == 0
    # a consumer account cannot write either
    pub = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", "dashboard", "-P",
                          USERS["dashboard"], "-t", "edgekd/kitchen/emotion", "-m", "forged", "-q", "1"],
                         capture_output=True, text=True, timeout=10)
    time.sleep(0.3)
    assert "forged" not in [m.payload for m in sub.messages()], pub.stderr


def test_no_raw_audio_leaves_the_device_or_is_written_to_disk(mosquitto, energy_onnx, tmp_path):
    """Everything on the wire is a status word or a result/stats JSON (their schemas forbid extra
    fields); the only files serve writes are its outbox, holding result JSON."""
    home, tmp, state, cwd = (tmp_path / n for n in ("home", "tmp", "state", "cwd"))
    for d in (home, tmp, state, cwd):
        d.mkdir()
    sub = mosquitto.subscribe("#", count=1000, timeout=30, qos=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # edgekd's own default must do it
    env.update(HOME=str(home), TMPDIR=str(tmp), STATE_DIRECTORY=str(state), XDG_CACHE_HOME=str(home / ".cache"))
    proc = subprocess.run([sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP),
                           "--broker", mosquitto.url, "--device-id", "quiet", "--stats-interval", "0.2"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sub.wait_until(lambda got: any(m.payload == "offline" for m in got), 10)
    messages = sub.messages()
    kinds = set()
    for m in messages:
        if m.topic == "edgekd/quiet/status":
            assert m.payload in ("online", "offline")
            kinds.add("status")
        elif m.topic == "edgekd/quiet/stats":
            StatsPayload.model_validate_json(m.payload)
            kinds.add("stats")
        else:
            assert m.topic == "edgekd/quiet/loudness", m.topic
            ResultPayload.model_validate_json(m.payload)
            kinds.add("result")
        assert len(m.payload) < 4096  # 1 s of 16-bit audio would be 32 kB
    assert kinds == {"status", "stats", "result"}
    written = sorted(p.relative_to(tmp_path).as_posix() for d in (home, tmp, state, cwd) for p in d.rglob("*") if p.is_file())
    # nothing else: in particular none of onnxruntime's telemetry (~/.cache/Microsoft/..., $TMPDIR/.ses),
    # which edgekd turns off (ORT_DISABLE_TELEMETRY, see edgekd/__init__.py)
    assert written and all(w.startswith("state/outbox-quiet.sqlite3") for w in written), written
    import sqlite3

    with sqlite3.connect(state / "outbox-quiet.sqlite3") as db:
        db.execute("SELECT COUNT(*) FROM outbox").fetchone()  # delivered: empty, but a real outbox
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables <= {"outbox", "meta", "sqlite_sequence"}
