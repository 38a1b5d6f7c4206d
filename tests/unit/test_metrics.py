"""The metrics extra: a clear message without prometheus-client, and what the registry reports
for a daemon fed real windows (a fake sink, a real pipeline and ONNX model)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import numpy as np
import pytest

import edgekd
from edgekd.config import ConfigError, load_settings


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (parsed, not pattern-matched)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_without_prometheus_client_the_message_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    from edgekd.metrics import Metrics

    with pytest.raises(ConfigError, match=r"pip install 'edgekd\[metrics\]'"):
        Metrics()


def test_serve_asks_for_the_extra_before_touching_audio_or_broker(monkeypatch, energy_onnx) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    from edgekd.serve import serve

    settings = load_settings(
        overrides={"models": [{"path": str(energy_onnx)}], "metrics_port": 0,
                   "audio": {"source": "/nonexistent.wav"}, "mqtt": {"url": "mqtt://127.0.0.1:1"}},
        environ={},
    )
    with pytest.raises(ConfigError, match="metrics_port"):
        serve(settings)


def test_counters_and_histograms_follow_the_windows(energy_onnx) -> None:
    from prometheus_client import generate_latest

    from edgekd.daemon import Daemon, build_runners
    from edgekd.metrics import Metrics, MetricsSink
    from edgekd.model import Model
    from edgekd.pipeline import Pipeline
    from edgekd.sink import MemorySink

    settings = load_settings(overrides={"models": [{"path": str(energy_onnx)}], "defaults": {"gate_db": "off"}}, environ={})
    runners = build_runners(settings, [Model(energy_onnx)])

    class Source:
        rate = 16000
        description = "test"

    metrics = Metrics()
    inner = MemorySink()
    sink = MetricsSink(inner, metrics)
    daemon = Daemon(Source(), runners, sink, device="m1")
    metrics.attach(daemon, inner)
    pipe = Pipeline(runners, 16000, sink, "m1", t0=datetime.now(timezone.utc))
    loud = (0.5 * np.sin(np.arange(32000) * 0.1)).astype(np.float32)
    pipe.feed(loud)  # 2 s: (2 - 1) / 0.25 + 1 = 5 windows
    text = generate_latest(metrics.registry).decode()
    key = {"model": "energy-test", "task": "loudness"}
    assert sample(text, "edgekd_windows_total", **key) == 5
    assert sample(text, "edgekd_results_total", **key, label="loud") == 5
    assert sample(text, "edgekd_detections_total", **key, label="loud") == 5
    assert sample(text, "edgekd_inference_seconds_count", **key) == 5
    assert sample(text, "edgekd_pipeline_latency_seconds_count", **key) == 5
    assert sample(text, "edgekd_info", device="m1", version=edgekd.__version__) == 1
    assert sample(text, "process_cpu_seconds_total") > 0
    assert len(inner.results) == 5


def test_metrics_and_discovery_import_without_torch() -> None:
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import edgekd.metrics, edgekd.mqtt.ha_discovery, edgekd.mqtt.connection\n"
        "edgekd.metrics.Metrics()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
