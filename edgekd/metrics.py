"""Prometheus metrics for `edgekd serve --metrics-port PORT` (prometheus-client, the `metrics` extra).

The endpoint binds 127.0.0.1 unless `metrics_host` widens it. Counters and gauges are read from
the daemon when scraped (nothing extra runs per window); latency histograms and per-label counts
are observed as windows and results pass:

    edgekd_windows_total{model,task}                  windows classified
    edgekd_windows_gated_total{model,task}            windows skipped by a gate
    edgekd_windows_failed_total{model,task}           windows whose inference failed
    edgekd_model_running{model,task}                  1 while running, 0 once stopped for failing
    edgekd_results_total{model,task,label}            results handed to MQTT, by top label
    edgekd_detections_total{model,task,label}         results whose label passed its threshold
    edgekd_inference_seconds{model,task}              histogram: onnxruntime time per window
    edgekd_pipeline_latency_seconds{model,task}       histogram: end of a window's audio to hand-off
    edgekd_audio_seconds_total                        audio captured
    edgekd_audio_dropped_samples_total                audio lost because the consumer fell behind
    edgekd_results_dropped_total                      results lost (queue full, or undelivered at exit)
    edgekd_queue_depth                                results waiting for the broker
    edgekd_broker_connected                           1 while connected to the MQTT broker
    edgekd_uptime_seconds, edgekd_info{device,version}, and process_* (CPU seconds, memory)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from edgekd import __version__
from edgekd.config import ConfigError
from edgekd.payloads import ResultPayload, StatsPayload

log = logging.getLogger(__name__)

MISSING = (
    "config: metrics_port: the Prometheus endpoint needs prometheus-client, which is not installed: "
    "pip install 'edgekd[metrics]' (or drop --metrics-port)"
)
# Seconds. Inference on a Pi is ~1-20 ms; the pipeline adds queueing, up to a hop or more.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(MISSING) from None
    return prometheus_client


class Metrics:
    """A registry of edgekd's metrics, fed by the daemon, served over HTTP by `serve_http`."""

    def __init__(self) -> None:
        pc = _prometheus()
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self._counter_family = CounterMetricFamily
        self._gauge_family = GaugeMetricFamily
        self.registry = pc.CollectorRegistry(auto_describe=True)
        pc.ProcessCollector(registry=self.registry)
        labels = ["model", "task"]
        self.inference = pc.Histogram(
            "edgekd_inference_seconds", "onnxruntime time per window", labels, buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.pipeline = pc.Histogram(
            "edgekd_pipeline_latency_seconds", "end of a window's audio to hand-off to the MQTT client",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.results = pc.Counter(
            "edgekd_results", "results handed to MQTT, by top label", [*labels, "label"], registry=self.registry
        )
        self.detections = pc.Counter(
            "edgekd_detections", "results whose label passed its threshold and refractory period",
            [*labels, "label"], registry=self.registry,
        )
        self._daemon: Any = None
        self._attached = time.monotonic()
        self._sink: Any = None
        self._server: Any = None
        self._thread: Any = None
        self.registry.register(_DaemonCollector(self))

    def attach(self, daemon: Any, sink: Any) -> None:
        """Read counters from `daemon` (and the real sink's queue) at scrape time; observe latencies."""
        self._daemon, self._sink = daemon, sink
        self._attached = time.monotonic()
        for r in daemon.runners:
            key = (r.meta.name, r.meta.task)
            inference, pipeline = self.inference.labels(*key), self.pipeline.labels(*key)
            r.counters.inference.observers.append(lambda ms, h=inference: h.observe(ms / 1000.0))
            r.counters.pipeline.observers.append(lambda ms, h=pipeline: h.observe(ms / 1000.0))

    def observe_result(self, result: ResultPayload) -> None:
        key = (result.model, result.task, result.label)
        self.results.labels(*key).inc()
        if result.detected:
            self.detections.labels(*key).inc()

    def serve_http(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Start the endpoint in a background thread; returns the address it listens on."""
        pc = _prometheus()
        try:
            self._server, self._thread = pc.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"config: metrics_port: cannot listen on {host}:{port} ({exc.strerror}); "
                "choose a free port, or 0 for any"
            ) from None
        bound_host, bound_port = self._server.server_address[:2]
        log.info("Prometheus metrics on http://%s:%d/metrics", bound_host, bound_port)
        return bound_host, bound_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _DaemonCollector:
    """Counters and gauges read from the daemon when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list:
        return []  # the families depend on the models; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        m, daemon, sink = self.m, self.m._daemon, self.m._sink
        counter, gauge = m._counter_family, m._gauge_family
        info = gauge("edgekd_info", "edgekd version and device id", labels=["device", "version"])
        info.add_metric([getattr(daemon, "device", ""), __version__], 1)
        yield info
        if daemon is None:
            return
        windows = counter("edgekd_windows", "windows classified", labels=["model", "task"])
        gated = counter("edgekd_windows_gated", "windows skipped by the energy gate or a label gate", labels=["model", "task"])
        nonfinite = counter(
            "edgekd_windows_nonfinite", "windows whose scores were NaN or infinite (not published)", labels=["model", "task"]
        )
        for r in daemon.runners:
            key = [r.meta.name, r.meta.task]
            windows.add_metric(key, r.counters.windows)
            gated.add_metric(key, r.counters.gated)
            nonfinite.add_metric(key, r.counters.nonfinite)
        yield windows
        yield gated
        yield nonfinite
        rate = daemon.source.rate
        yield counter("edgekd_audio_seconds", "audio captured", value=daemon.ring.written / rate)
        yield counter("edgekd_audio_dropped_samples", "audio samples lost because the consumer fell behind", value=daemon.ring.dropped)
        yield counter("edgekd_results_dropped", "results lost: queue full, or undelivered at exit", value=int(getattr(sink, "dropped", 0)))
        yield gauge("edgekd_queue_depth", "results waiting for the broker", value=int(getattr(sink, "queue_depth", 0)))
        yield gauge("edgekd_broker_connected", "1 while connected to the MQTT broker", value=1 if getattr(sink, "connected", False) else 0)
        yield gauge("edgekd_uptime_seconds", "seconds since serving started", value=time.monotonic() - m._attached)
        yield from self._model_health(daemon)

    def _model_health(self, daemon: Any) -> Iterator[Any]:
        counter, gauge = self.m._counter_family, self.m._gauge_family
        failed = counter("edgekd_windows_failed", "windows whose inference failed", labels=["model", "task"])
        running = gauge("edgekd_model_running", "1 while the model runs, 0 once stopped for failing", labels=["model", "task"])
        for r in daemon.runners:
            key = [r.meta.name, r.meta.task]
            failed.add_metric(key, r.failures.failed)
            running.add_metric(key, 0 if r.failures.stopped else 1)
        yield failed
        yield running


class MetricsSink:
    """Passes everything to the real sink and counts results by label on the way."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def publish_result(self, result: ResultPayload) -> None:
        self.metrics.observe_result(result)
        self.inner.publish_result(result)

    def publish_stats(self, stats: StatsPayload) -> None:
        self.inner.publish_stats(stats)

    def close(self, timeout: float = 5.0) -> None:
        self.inner.close(timeout)

    def __getattr__(self, name: str) -> Any:  # dropped, queue_depth, connected, ...
        return getattr(self.inner, name)
