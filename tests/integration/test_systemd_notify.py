"""`edgekd serve` speaks sd_notify to a NOTIFY_SOCKET bound by the test, as systemd would."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekd

pytestmark = pytest.mark.integration
CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"


@pytest.mark.slow
def test_serve_sends_ready_watchdog_status_and_stopping(tmp_path, energy_onnx):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000", STATE_DIRECTORY=str(tmp_path / "state"))
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP),
         "--realtime", "--loop", "--stdout", "--stats-interval", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    messages: list[list[str]] = []
    stopped = False
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                messages.append(sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                pass
            flat = [f for m in messages for f in m]
            if not stopped and flat.count("WATCHDOG=1") >= 3 and any(f.startswith("STATUS=") and "windows" in f for f in flat):
                proc.send_signal(signal.SIGTERM)
                stopped = True
            if stopped and proc.poll() is not None:
                break
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
        try:  # anything sent just before exit
            while True:
                messages.append(sock.recv(4096).decode().split("\n"))
        except socket.timeout:
            pass
    finally:
        proc.kill()
        sock.close()
    flat = [f for m in messages for f in m]
    assert messages[0][0] == "READY=1", messages[:3]  # nothing before READY
    assert flat.count("WATCHDOG=1") >= 3
    assert any(f.startswith("STATUS=") and "pipeline p99" in f for f in flat)
    assert "STOPPING=1" in flat
    assert flat.index("STOPPING=1") > flat.index("READY=1")
    assert "WATCHDOG=1" not in flat[flat.index("STOPPING=1"):]
