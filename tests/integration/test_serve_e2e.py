"""`edgekd serve` end to end: a real speech file, the real CLI process, a real mosquitto, checked
with mosquitto_sub (an independent subscriber). The broker fixture lives in conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekd
from edgekd.payloads import ResultPayload, StatsPayload

pytestmark = pytest.mark.integration

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 2.1 s, 16 kHz
ALSA_SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")  # real speech, 48 kHz
EDGEKD = [sys.executable, "-m", "edgekd"]


def edgekd_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serve(tmp_path, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [*EDGEKD, "serve", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=edgekd_env(tmp_path),
        **kw,
    )


@pytest.mark.slow
def test_a_speech_file_goes_to_the_broker_then_status_goes_offline(mosquitto, energy_onnx, tmp_path):
    sub = mosquitto.subscribe("edgekd/e2e/#", count=8, timeout=30, qos=1)
    proc = serve(tmp_path, "--model", energy_onnx, "--source", CLIP, "--broker", mosquitto.url,
                 "--device-id", "e2e", "--stats-interval", "60")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    msgs = sub.wait()
    topics = [m.topic for m in msgs]
    assert topics[0] == "edgekd/e2e/status" and msgs[0].payload == "online"
    assert topics[-1] == "edgekd/e2e/status" and msgs[-1].payload == "offline"
    results = [ResultPayload.model_validate_json(m.payload) for m in msgs if m.topic == "edgekd/e2e/loudness"]
    assert [r.seq for r in results] == [0, 1, 2, 3, 4]  # (2.1 s - 1 s window) / 0.25 s hop + 1
    assert all(r.device == "e2e" and r.label in ("quiet", "loud") and r.latency_ms.pipeline >= 0 for r in results)
    assert {r.label for r in results} == {"quiet", "loud"}  # speech, then its quieter tail
    stats = [StatsPayload.model_validate_json(m.payload) for m in msgs if m.topic == "edgekd/e2e/stats"]
    assert stats and stats[-1].models[0].windows == 5 and stats[-1].source_state == "ended"
    retained = mosquitto.sub("edgekd/e2e/status", 1, timeout=3, retained_only=True)
    assert [(m.payload, m.retained) for m in retained] == [("offline", True)]


@pytest.mark.slow
def test_a_48khz_recording_is_resampled_to_the_model_rate(mosquitto, energy_onnx, tmp_path):
    sub = mosquitto.subscribe("edgekd/alsa/loudness", count=2, timeout=30)
    proc = serve(tmp_path, "--model", energy_onnx, "--source", ALSA_SPEECH, "--broker", mosquitto.url,
                 "--device-id", "alsa", "--gate-db", "off")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    results = [ResultPayload.model_validate_json(m.payload) for m in sub.wait()]
    assert [r.seq for r in results] == [0, 1]  # 1.43 s at 16 kHz: two 1 s windows 0.25 s apart


def wait_for_status(mosquitto, device, payload, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = mosquitto.sub(f"edgekd/{device}/status", 1, timeout=1, retained_only=True)
        if got and got[0].payload == payload:
            return True
    return False


@pytest.mark.slow
def test_sigterm_finishes_and_publishes_offline_exit_0(mosquitto, energy_onnx, tmp_path):
    proc = serve(tmp_path, "--model", energy_onnx, "--source", CLIP, "--realtime", "--loop",
                 "--broker", mosquitto.url, "--device-id", "term", "--stats-interval", "0.5")
    try:
        assert wait_for_status(mosquitto, "term", "online")
        stats = mosquitto.sub("edgekd/term/stats", 1, timeout=5)
        assert stats and StatsPayload.model_validate_json(stats[0].payload).broker_connected
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert wait_for_status(mosquitto, "term", "offline", timeout=3)


@pytest.mark.slow
def test_last_will_says_offline_when_the_daemon_is_killed(mosquitto, energy_onnx, tmp_path):
    proc = serve(tmp_path, "--model", energy_onnx, "--source", CLIP, "--realtime", "--loop",
                 "--broker", mosquitto.url, "--device-id", "killed")
    try:
        assert wait_for_status(mosquitto, "killed", "online")
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert wait_for_status(mosquitto, "killed", "offline")


@pytest.mark.slow
def test_demo_with_a_given_model_and_clip(energy_onnx, tmp_path):
    """`edgekd demo --model M --clip F`: any model, one file, into the embedded broker."""
    env = edgekd_env(tmp_path)
    proc = subprocess.run([*EDGEKD, "demo", "--model", str(energy_onnx), "--clip", str(CLIP)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(" loudness " in l for l in lines) == 5
    assert any("offline" in l for l in lines) and "5 of 5 results arrived" in proc.stdout


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "models").glob("*-emotion.onnx"))


@pytest.mark.skipif(not SHIPPED, reason="no shipped emotion model in models/")
def test_readme_demo_hears_the_five_emotions_in_order(tmp_path):
    """The README's run command: no broker, no microphone, the shipped models, the bundled clips
    (a word the models never heard in training, said angry, happy, sad, neutral, surprised)."""
    env = edgekd_env(tmp_path)
    proc = subprocess.run([*EDGEKD, "demo", "--fast"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if " emotion " in line]
    n_models = len(SHIPPED)
    assert len(rows) == 5 * n_models, proc.stdout
    for model in {r[3] for r in rows}:
        labels = [r[4] for r in rows if r[3] == model]
        assert labels == ["angry", "happy", "sad", "neutral", "surprise"], (model, proc.stdout)
    assert f"{5 * n_models} of {5 * n_models} results arrived" in proc.stdout


@pytest.mark.slow
def test_listen_wait_online_follows_the_daemon(mosquitto, energy_onnx, tmp_path):
    env = edgekd_env(tmp_path)
    wait = [*EDGEKD, "listen", "--broker", mosquitto.url, "--device-id", "w", "--wait-online"]
    assert subprocess.run([*wait, "1"], capture_output=True, text=True, env=env, timeout=30).returncode == 1
    proc = serve(tmp_path, "--model", energy_onnx, "--source", CLIP, "--realtime", "--loop",
                 "--broker", mosquitto.url, "--device-id", "w")
    try:
        done = subprocess.run([*wait, "20"], capture_output=True, text=True, env=env, timeout=40)
        assert done.returncode == 0 and "w: online" in done.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_raw_pcm_on_stdin(energy_onnx, tmp_path):
    """`arecord -f S16_LE -r 16000 -c 1 | edgekd serve --source - ...`, with the clip as arecord."""
    import numpy as np

    from edgekd.audio.decode import decode_file

    pcm = np.round(decode_file(CLIP).samples * 32768).astype("<i2").tobytes()
    proc = subprocess.run([*EDGEKD, "serve", "--model", str(energy_onnx), "--source", "-", "--rate", "16000",
                           "--stdout"], input=pcm, capture_output=True, env=edgekd_env(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert len(proc.stdout.decode().splitlines()) == 5
