"""Putting `edgekd serve` together: models, source, sink (MQTT, embedded broker or stdout), signals."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

from edgekd.audio.sources import Source, capture_chunk_seconds, open_source
from edgekd.catalog import locate
from edgekd.config import ConfigError, Settings, mqtt_settings
from edgekd.daemon import Daemon, build_runners
from edgekd.model import PROVIDER_CHOICES, Model, ModelRuntimeOptions
from edgekd.pipeline import ModelRunner
from edgekd.signals import StoppedBeforeServing, StopSignals
from edgekd.sink import JsonLinesSink, ResultSink
from edgekd.split import load_split, served_hop
from edgekd.stateful import load_stream

log = logging.getLogger(__name__)

BROKER_CONNECT_WAIT_S = 2.0  # at most this long before capture starts while the broker is away (results queue)
EARLY_CLOSE_S = 1.0  # closing a publisher the daemon never got to close (stopped before serving)
FORCED_EXIT = 130  # the exit status after a second signal forced the stop (as for an interrupted program)


def load_models(settings: Settings) -> list[Model]:
    if not settings.models:
        raise ConfigError(
            "config: no model: pass --model NAME or --model FILE.onnx (`edgekd models` lists the names), "
            "or add a [[models]] table to the config"
        )
    opts = ModelRuntimeOptions(threads=settings.threads, providers=PROVIDER_CHOICES[settings.provider])
    models = [Model(locate(m.path), opts) for m in settings.models]  # a path, or a name (edgekd.catalog)
    for model in models:
        # a malformed front end, body or step graph is refused here, before any audio or broker
        split = load_split(model)
        if split is not None:
            load_stream(model)  # checked against the whole graph too, before that graph goes
            model.run_whole_windows_through(split.logits_of_windows)
    give_back_freed_memory()
    return models


def give_back_freed_memory() -> None:
    """Return the heap that loading freed (sessions dropped, load checks' windows) to the system.

    glibc keeps freed small blocks in its arenas; `malloc_trim(0)` hands whole free pages back. Done
    once, before serving. Elsewhere (musl, macOS) nothing happens."""
    import ctypes

    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own symbols: libc's
    except OSError:
        return
    if trim is not None:
        trim(0)


def make_source(settings: Settings, models: list[Model], runners: Sequence[ModelRunner] = ()) -> Source:
    """The configured source; with `runners`, delivering audio in chunks that fit their hops."""
    a = settings.audio
    hops = [served_hop(r) / r.meta.sample_rate for r in runners]
    return open_source(
        a.source,
        rate=a.rate,
        channels=a.channels,
        realtime=a.realtime,
        loop=a.loop,
        default_rate=models[0].meta.sample_rate,
        chunk_s=capture_chunk_seconds(hops),
    )


@contextlib.contextmanager
def mqtt_sink(settings: Settings) -> Iterator[ResultSink]:
    """An MqttPublisher, started; with url 'embedded', an in-process broker on loopback as well."""
    from edgekd.mqtt.publisher import MqttPublisher

    mqtt = mqtt_settings(settings)
    broker = None
    if mqtt.broker.embedded:
        from edgekd.mqtt.broker import EmbeddedBroker  # amqtt only when asked for

        broker = EmbeddedBroker(port=mqtt.broker.port)
        broker.start()
        mqtt = mqtt.with_url(broker.url)
        if mqtt.protocol == "auto":
            mqtt.protocol = broker.protocol  # known up front: no MQTT 5 attempt to fall back from
        log.info("embedded MQTT broker on %s", broker.url)
    publisher = None
    try:
        publisher = MqttPublisher(mqtt)
        publisher.start()
        # a refused login fails here, loudly; an absent broker is waited for while results queue
        if not publisher.wait_connected(BROKER_CONNECT_WAIT_S):
            log.warning("MQTT broker %s not reachable yet; results queue until it is", mqtt.broker)
        yield publisher
    finally:
        if publisher is not None:
            publisher.close(timeout=EARLY_CLOSE_S)  # no-op after the daemon closed it; else (a stop before serving) say offline
        if broker is not None:
            broker.stop()


@contextlib.contextmanager
def ha_discovery(
    settings: Settings, mqtt, models: list[Model], time_left: Callable[[], float | None] = lambda: None
) -> Iterator[None]:
    """Announce the models and health to Home Assistant while serving (settings.ha_discovery).

    `time_left()` is what remains of a stop bound (None: not stopping); the clean-up keeps within it."""
    from edgekd.mqtt.ha_discovery import HaDiscovery, announced_models, discovery_configs
    from edgekd.mqtt.topics import Topics

    try:
        configs = discovery_configs(
            Topics(mqtt.prefix, mqtt.device_id), announced_models(models), settings.ha_discovery_prefix, qos=mqtt.qos
        )
    except ValueError as exc:
        raise ConfigError(f"config: ha_discovery: {exc}") from None
    ha = HaDiscovery(mqtt, configs, settings.ha_discovery_prefix).start()
    try:
        yield
    finally:
        left = time_left()
        if left is None:
            ha.close()
        else:
            ha.close(timeout=max(EARLY_CLOSE_S / 4, left))


def serve(settings: Settings, use_stdout: bool = False) -> int:
    """Serve until the source ends or a signal; returns the exit status (FORCED_EXIT after a forced stop).

    Stop signals are handled from the start (edgekd.signals), model loading and broker wait included.
    onnxruntime is imported first: a stop raised inside its native initialisation would surface as
    its ImportError."""
    import onnxruntime  # noqa: F401

    with StopSignals() as signals:
        try:
            daemon = _serve(settings, use_stdout, signals)
        except BaseException as exc:  # a stop may arrive wrapped by the code it interrupted
            stopped = _stopped_before_serving(exc)
            if stopped is None:
                raise
            log.info("stopped by %s before serving began", stopped.signal_name)
            return 0
    return FORCED_EXIT if daemon.forced else 0


def _stopped_before_serving(exc: BaseException | None) -> StoppedBeforeServing | None:
    """The StoppedBeforeServing that `exc` is, or that caused it (e.g. raised inside an import)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, StoppedBeforeServing):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _serve(settings: Settings, use_stdout: bool, signals: StopSignals) -> Daemon:
    models = load_models(settings)
    runners = build_runners(settings, models)
    metrics = None
    if settings.metrics_port is not None:  # before capture and broker: a missing extra fails at once
        from edgekd.metrics import Metrics

        metrics = Metrics()
    source = make_source(settings, models, runners)
    sink_cm = contextlib.nullcontext(JsonLinesSink()) if use_stdout else mqtt_sink(settings)
    daemon: Daemon | None = None
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(sink_cm)
        if settings.ha_discovery and not use_stdout:
            stack.enter_context(
                ha_discovery(settings, sink.settings, models, lambda: daemon.stop_time_left() if daemon else None)
            )
        if metrics is not None:
            from edgekd.metrics import MetricsSink

            real_sink, sink = sink, MetricsSink(sink, metrics)
        daemon = Daemon(
            source,
            runners,
            sink,
            device=settings.device_id,
            stats_interval=settings.stats_interval,
            buffer_seconds=settings.audio.buffer_seconds,
            stop_timeout=settings.stop_timeout,
        )
        if metrics is not None:
            metrics.attach(daemon, real_sink)
            metrics.serve_http(settings.metrics_port, settings.metrics_host)
            stack.callback(metrics.close)
        signals.attach(daemon)
        daemon.run()
    assert daemon is not None
    return daemon
