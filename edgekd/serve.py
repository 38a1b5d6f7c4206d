"""Putting `edgekd serve` together: models, source, sink (MQTT, embedded broker or stdout), signals."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from edgekd.audio.sources import Source, open_source
from edgekd.config import ConfigError, Settings, mqtt_settings
from edgekd.daemon import Daemon, build_runners
from edgekd.model import PROVIDER_CHOICES, Model, ModelRuntimeOptions
from edgekd.sink import JsonLinesSink, ResultSink
from edgekd.split import load_split

log = logging.getLogger(__name__)

BROKER_CONNECT_WAIT_S = 2.0  # at most this long before capture starts while the broker is away (results queue)


def load_models(settings: Settings) -> list[Model]:
    if not settings.models:
        raise ConfigError("config: no model: pass --model FILE.onnx or add a [[models]] table to the config")
    opts = ModelRuntimeOptions(threads=settings.threads, providers=PROVIDER_CHOICES[settings.provider])
    models = [Model(m.path, opts) for m in settings.models]
    for model in models:
        load_split(model)  # a malformed front end or body is refused here, before any audio or broker
    return models


def make_source(settings: Settings, models: list[Model]) -> Source:
    a = settings.audio
    return open_source(
        a.source,
        rate=a.rate,
        channels=a.channels,
        realtime=a.realtime,
        loop=a.loop,
        default_rate=models[0].meta.sample_rate,
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
    try:
        publisher = MqttPublisher(mqtt)
        publisher.start()
        # a refused login fails here, loudly; an absent broker is waited for while results queue
        if not publisher.wait_connected(BROKER_CONNECT_WAIT_S):
            log.warning("MQTT broker %s not reachable yet; results queue until it is", mqtt.broker)
        yield publisher
    finally:
        if broker is not None:
            broker.stop()


@contextlib.contextmanager
def stop_on_signals(daemon: Daemon) -> Iterator[None]:
    """SIGTERM and SIGINT stop capture; the daemon then finishes the windows in hand."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        daemon.stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def ha_discovery(settings: Settings, mqtt, models: list[Model]) -> Iterator[None]:
    """Announce the models and health to Home Assistant while serving (settings.ha_discovery)."""
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
        ha.close()


def serve(settings: Settings, use_stdout: bool = False) -> None:
    models = load_models(settings)
    runners = build_runners(settings, models)
    metrics = None
    if settings.metrics_port is not None:  # before capture and broker: a missing extra fails at once
        from edgekd.metrics import Metrics

        metrics = Metrics()
    source = make_source(settings, models)
    sink_cm = contextlib.nullcontext(JsonLinesSink()) if use_stdout else mqtt_sink(settings)
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(sink_cm)
        if settings.ha_discovery and not use_stdout:
            stack.enter_context(ha_discovery(settings, sink.settings, models))
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
        )
        if metrics is not None:
            metrics.attach(daemon, real_sink)
            metrics.serve_http(settings.metrics_port, settings.metrics_host)
            stack.callback(metrics.close)
        with stop_on_signals(daemon):
            daemon.run()
