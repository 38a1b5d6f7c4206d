"""The microphone is gone, then back: the daemon says so and resumes without a restart.

Real PyAudio -> PortAudio -> ALSA, with ALSA's `file` plugin as the capture device (see
shared/docs/recipes.md). While its infile does not exist, opening the device fails inside
PortAudio for real (OSError -9993, as with an unplugged USB microphone); once the file is there,
the next retry opens it and the clip's samples flow. Checked from outside: stats and results on a
real mosquitto, read with mosquitto_sub, and the process id never changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import edgekd
from edgekd.audio.decode import decode_file

pytestmark = pytest.mark.integration
pytest.importorskip("pyaudio", reason="needs the mic extra: pip install 'edgekd[mic]'")

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 16 kHz


def test_a_microphone_that_is_missing_then_appears_is_reported_and_resumed(mosquitto, energy_onnx, tmp_path):
    raw = tmp_path / "in.raw"  # not there yet: the "microphone" is unplugged
    (tmp_path / ".asoundrc").write_text(
        'pcm.!default { type asym  playback.pcm "null"  capture.pcm "filecap" }\n'
        f'pcm.filecap  {{ type file  slave.pcm "null"  file "/dev/null"  infile "{raw}"  format "raw" }}\n'
    )
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text("[audio]\nbuffer_seconds = 600\n")  # ALSA's null device is not paced
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    stats = mosquitto.subscribe("edgekd/mic/stats", count=10_000, timeout=60)
    results = mosquitto.subscribe("edgekd/mic/loudness", count=10_000, timeout=60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--config", str(cfg), "--model", str(energy_onnx), "--source", "mic",
         "--gate-db", "off", "--broker", mosquitto.url, "--device-id", "mic", "--stats-interval", "0.3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        # three stats (0.9 s or more) saying failed: long enough that a timestamp not moved on shows
        failed = stats.wait_until(lambda got: sum(m.json()["source_state"] == "failed" for m in got) >= 3, 20)
        report = next(m.json() for m in failed if m.json()["source_state"] == "failed")
        assert "cannot open it" in report["source"] and report["models"][0]["windows"] == 0
        assert results.messages() == [] and proc.poll() is None

        samples = decode_file(CLIP).samples
        plugged_in = datetime.now(timezone.utc)
        raw.write_bytes(np.round(samples * 32768).astype("<i2").tobytes())  # plugged in
        got = results.wait_until(lambda got: len(got) >= 5, 30)
        # the time it was down was skipped: the first window starts when audio came back, not at start
        first = datetime.fromisoformat(got[0].json()["window_start"])
        assert first >= plugged_in - timedelta(seconds=0.5), (first, plugged_in)
        back = stats.wait_until(lambda got: got[-1].json()["source_state"] == "running" and got[-1].json()["models"][0]["windows"] > 0, 20)
        assert proc.poll() is None  # the same process all along
        assert back[-1].json()["source"].startswith("mic default")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "retrying in" in err and "is back after" in err


def test_a_rate_the_device_refuses_is_not_retried_but_raised_at_once(tmp_path):
    """Retrying cannot fix settings the device refuses at the first open: the capture says so once and
    stops. (`serve` refuses rates under 4 kHz before it opens a device, see tests/adversarial; the
    ALSA file device here takes every rate above that, so the capture layer is driven directly.)"""
    raw = tmp_path / "in.raw"
    raw.write_bytes(b"\0\0" * 16000)
    (tmp_path / ".asoundrc").write_text(
        'pcm.!default { type asym  playback.pcm "null"  capture.pcm "filecap" }\n'
        f'pcm.filecap  {{ type file  slave.pcm "null"  file "/dev/null"  infile "{raw}"  format "raw" }}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.update(HOME=str(tmp_path))
    code = (
        "import threading, sys\n"
        "from edgekd.audio.decode import AudioError\n"
        "from edgekd.audio.ringbuffer import RingBuffer\n"
        "from edgekd.audio.sources import MicSource\n"
        "try:\n"
        "    MicSource(None, rate=1, channels=1).run(RingBuffer(16000), threading.Event())\n"
        "except AudioError as exc:\n"
        "    print(exc); sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.startswith("mic default (1 Hz, 1 ch): cannot open it") and "Invalid sample rate" in proc.stdout
    assert "retrying" not in proc.stderr
