"""The Prometheus endpoint of a real `edgekd serve`, scraped over HTTP on loopback while it
serves a real speech file to a real mosquitto."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import edgekd

pytestmark = pytest.mark.integration

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
def test_scrape_a_serving_daemon(mosquitto, energy_onnx) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP), "--realtime",
         "--loop", "--broker", mosquitto.url, "--device-id", "prom", "--metrics-port", str(port), "--gate-db", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    key = (("model", "energy-test"), ("task", "loudness"))
    try:
        deadline = time.monotonic() + 20
        metrics: dict = {}
        while time.monotonic() < deadline:
            try:
                metrics = scrape(port)
            except OSError:
                metrics = {}
            if metrics.get(("edgekd_windows_total", key), 0) >= 3:
                break
            time.sleep(0.2)
        windows = metrics[("edgekd_windows_total", key)]
        assert windows >= 3
        assert metrics[("edgekd_broker_connected", ())] == 1
        assert metrics[("edgekd_inference_seconds_count", key)] == windows
        assert 0 < metrics[("edgekd_inference_seconds_sum", key)] < windows  # seconds, not ms
        assert metrics[("edgekd_pipeline_latency_seconds_count", key)] == windows
        results = sum(v for (name, labels), v in metrics.items() if name == "edgekd_results_total")
        assert results >= 3  # mode "all": every window is a result
        assert metrics[("edgekd_audio_seconds_total", ())] >= 1.0
        assert metrics[("edgekd_audio_dropped_samples_total", ())] == 0
        assert metrics[("edgekd_results_dropped_total", ())] == 0
        assert ("edgekd_queue_depth", ()) in metrics
        assert metrics[("process_resident_memory_bytes", ())] > 10e6
        # bound to 127.0.0.1 only by default: another address of this host (127.0.0.2) is refused
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", port), timeout=1).close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"Prometheus metrics on http://127.0.0.1:{port}/metrics" in err


def test_a_taken_port_is_a_one_line_error(mosquitto, energy_onnx) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP),
             "--broker", mosquitto.url, "--device-id", "prom", "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2
    assert f"metrics_port: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
