"""Home Assistant MQTT discovery: edgekd's models and health appear in Home Assistant by themselves.

One Home Assistant device per edgekd instance (identifier `edgekd_<device_id>`), holding sensors
whose retained config messages live at

    <discovery_prefix>/sensor/edgekd_<device_id>/<object_id>/config     (prefix: homeassistant)

    <task>               state = the top label (an enum of the model's labels); attributes = score,
                         scores, detected, event, model, model_version, window_end
    <task>_confidence    the top label's score in percent
    <task>_latency       pipeline latency p99 of that model, ms (a duration; diagnostic, from stats)
    <task>_inference     inference latency p99 of that model, ms (a duration; diagnostic)
    cpu, memory          process CPU percent of one core, resident memory MiB (diagnostic)
    dropped_audio        audio samples dropped because the consumer fell behind (diagnostic)
    results_dropped      results lost because the outgoing queue was full (diagnostic)

Every sensor is available while the retained `<prefix>/<device>/status` says `online` (it is the
device's last will `offline`). The payloads follow Home Assistant's documented single-component
discovery schema and MQTT sensor options (docs/integrations.md cites the pages); `HaSensorConfig`
is that schema as a typed model, and tests pin its JSON.

Removing a model removes its sensors: on every connection `HaDiscovery` subscribes to its own
config topics, reads back the retained configs it announced on an earlier run, and publishes an
empty retained payload (Home Assistant's "delete") to each one it no longer announces. It knows
it has read them all when a marker it publishes after subscribing comes back to it
(`<prefix>/<device>/ha/sweep`, a level below edgekd's own topics): the broker sends a new
subscription's retained messages before anything published later. It also
re-announces when Home Assistant's birth message (`<discovery_prefix>/status` = `online`) arrives.
It runs its own small MQTT connection (client id `<client_id>-ha`), so that announcing never
waits behind results.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekd import __version__
from edgekd.mqtt.connection import make_client, refusal_message
from edgekd.mqtt.settings import MqttSettings
from edgekd.mqtt.topics import Topics, check_part, check_prefix

log = logging.getLogger(__name__)

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
COMPONENT = "sensor"
CONFIG_QOS = 1
SWEEP_TIMEOUT_S = 5.0  # no marker back by then (a broker that dropped it): sweep with what arrived
MANUFACTURER = "edgekd"
# At exit, let a clean-up that has started finish: the sweep is itself bounded by SWEEP_TIMEOUT_S,
# so waiting that long (plus a margin to publish the empty configs) never cuts a sweep short.
CLOSE_WAIT_S = SWEEP_TIMEOUT_S + 1.0


class _HaModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HaDevice(_HaModel):
    """The `device` mapping: ties every sensor of this edgekd instance to one device."""

    identifiers: list[str]
    name: str
    manufacturer: str = MANUFACTURER
    model: str
    sw_version: str = __version__


class HaOrigin(_HaModel):
    """The `origin` mapping (abbreviated `o` by HA): the software that sent the config."""

    name: str = "edgekd"
    sw_version: str = __version__


class HaAvailability(_HaModel):
    topic: str
    payload_available: str = "online"
    payload_not_available: str = "offline"


class HaSensorConfig(_HaModel):
    """One MQTT sensor's discovery payload (keys unabbreviated, as HA's sensor docs name them)."""

    name: str
    unique_id: str
    default_entity_id: str = Field(..., description="sensor.<id>: the entity id HA gives it when first added")
    state_topic: str
    value_template: str
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None
    device_class: Literal["enum", "duration", "data_size"] | None = None
    options: list[str] | None = Field(None, description="the states an enum sensor can have")
    unit_of_measurement: str | None = None
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    suggested_display_precision: int | None = None
    entity_category: Literal["diagnostic"] | None = None
    icon: str | None = None
    availability: list[HaAvailability]
    availability_mode: Literal["latest"] = "latest"
    device: HaDevice
    origin: HaOrigin = Field(default_factory=HaOrigin)
    qos: int = 1

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


@dataclass(frozen=True)
class AnnouncedModel:
    """What discovery needs of a served model."""

    name: str
    version: str
    task: str
    labels: tuple[str, ...] = ()


def node_id(device_id: str) -> str:
    return f"edgekd_{check_part(device_id, 'device id')}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")


def _title(task: str) -> str:
    return task.replace("_", " ").replace("-", " ").capitalize()


def _model_stat(task: str, path: str) -> str:
    """A template that picks one model's figure out of the stats payload's `models` list."""
    return f"{{% for m in value_json.models if m.task == '{task}' %}}{{{{ m.{path} }}}}{{% endfor %}}"


ATTRIBUTES_TEMPLATE = (
    "{{ {'score': value_json.score, 'scores': value_json.scores, 'detected': value_json.detected, "
    "'event': value_json.event, 'model': value_json.model, 'model_version': value_json.model_version, "
    "'window_end': value_json.window_end} | tojson }}"
)


def discovery_configs(
    topics: Topics,
    models: Sequence[AnnouncedModel],
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
    qos: int = 1,
) -> dict[str, HaSensorConfig]:
    """Config topic -> payload for every sensor of this device, in a stable order."""
    check_prefix(discovery_prefix)
    node = node_id(topics.device)
    device = HaDevice(
        identifiers=[node],
        name=f"edgekd {topics.device}",
        model="edgekd audio classifier: " + ", ".join(f"{m.name} {m.version}" for m in models),
    )
    availability = [HaAvailability(topic=topics.status)]

    def sensor(object_id: str, **fields: Any) -> tuple[str, HaSensorConfig]:
        check_part(object_id, "Home Assistant object id")
        unique = f"{node}_{object_id}"
        config = HaSensorConfig(
            unique_id=unique,
            default_entity_id=f"{COMPONENT}.{_slug(unique)}",
            availability=availability,
            device=device,
            qos=qos,
            **fields,
        )
        return f"{discovery_prefix}/{COMPONENT}/{node}/{object_id}/config", config

    diagnostic: dict[str, Any] = {"entity_category": "diagnostic", "state_topic": topics.stats}
    out: list[tuple[str, HaSensorConfig]] = []
    for m in models:
        results = topics.result(m.task)
        title = _title(m.task)
        # Home Assistant refuses an empty options list: a model without labels gets a plain sensor
        labels: dict[str, Any] = {"device_class": "enum", "options": list(m.labels)} if m.labels else {}
        out += [
            sensor(
                m.task, name=title, state_topic=results, value_template="{{ value_json.label }}",
                json_attributes_topic=results, json_attributes_template=ATTRIBUTES_TEMPLATE, icon="mdi:waveform",
                **labels,
            ),
            sensor(
                f"{m.task}_confidence", name=f"{title} confidence", state_topic=results,
                value_template="{{ (value_json.score * 100) | round(1) }}", unit_of_measurement="%",
                state_class="measurement", suggested_display_precision=1, icon="mdi:percent",
            ),
            sensor(
                f"{m.task}_latency", name=f"{title} pipeline latency p99", value_template=_model_stat(m.task, "pipeline_ms.p99"),
                device_class="duration", unit_of_measurement="ms", state_class="measurement", suggested_display_precision=1, icon="mdi:timer-outline",
                **diagnostic,
            ),
            sensor(
                f"{m.task}_inference", name=f"{title} inference latency p99", value_template=_model_stat(m.task, "inference_ms.p99"),
                device_class="duration", unit_of_measurement="ms", state_class="measurement", suggested_display_precision=1, icon="mdi:timer-outline",
                **diagnostic,
            ),
        ]
    out += [
        sensor(
            "cpu", name="CPU", value_template="{{ value_json.cpu_percent }}", unit_of_measurement="%",
            state_class="measurement", suggested_display_precision=1, icon="mdi:cpu-64-bit", **diagnostic,
        ),
        sensor(
            # rss_mb counts 2**20 bytes: Home Assistant's data_size converts "MB" as 10**6
            "memory", name="Memory", value_template="{{ value_json.rss_mb }}", device_class="data_size", unit_of_measurement="MiB",
            state_class="measurement", suggested_display_precision=1, icon="mdi:memory", **diagnostic,
        ),
        sensor(
            "dropped_audio", name="Dropped audio", value_template="{{ value_json.dropped_audio_samples }}",
            unit_of_measurement="samples", state_class="total_increasing", icon="mdi:microphone-off", **diagnostic,
        ),
        sensor(
            "results_dropped", name="Results dropped", value_template="{{ value_json.results_dropped }}",
            state_class="total_increasing", icon="mdi:message-alert-outline", **diagnostic,
        ),
    ]
    topics_seen = [t for t, _ in out]
    if len(set(topics_seen)) != len(topics_seen):
        dupes = sorted({t for t in topics_seen if topics_seen.count(t) > 1})
        raise ValueError(f"two models would announce the same Home Assistant sensor ({dupes}): serve one model per task")
    return dict(out)


class HaDiscovery:
    """Announces `configs` (retained) on every connection and removes what an earlier run announced
    and this one does not. See the module docstring."""

    def __init__(self, mqtt: MqttSettings, configs: dict[str, HaSensorConfig], discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> None:
        self.settings = mqtt
        self.configs = dict(configs)
        self.discovery_prefix = check_prefix(discovery_prefix)
        self.own_filter = f"{discovery_prefix}/{COMPONENT}/{node_id(mqtt.device_id)}/+/config"
        self.birth_topic = f"{discovery_prefix}/status"
        self.marker_topic = f"{mqtt.prefix}/{mqtt.device_id}/ha/sweep"
        self._client = make_client(mqtt, client_id=f"{mqtt.client_id}-ha")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._sweep_mid: int | None = None
        self._marker: bytes | None = None  # the marker this connection waits for
        self._connection = 0
        self._timer: threading.Timer | None = None
        self.removed: list[str] = []  # config topics cleared because nothing announces them any more
        self._clearing: list[Any] = []  # MQTTMessageInfo of the clears, acknowledged before disconnecting
        self.announcements = 0  # times the full set was published
        self.swept = threading.Event()  # set after the first read-back and clean-up

    def start(self) -> HaDiscovery:
        log.info(
            "Home Assistant discovery: %d sensors under %s",
            len(self.configs), self.own_filter.replace("/+/config", "/"),
        )
        url = self.settings.broker
        self._client.connect_async(url.host, url.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        return self

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Finish a clean-up in progress (at most `timeout`), then disconnect. The retained configs
        stay: the sensors remain in Home Assistant, unavailable while the status is offline."""
        deadline = time.monotonic() + timeout
        if self._client.is_connected() and not self.swept.wait(timeout):
            log.warning("Home Assistant discovery: stale sensors not checked within %.1f s; next start will", timeout)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            clearing = list(self._clearing)
        # The clears are queued, not yet sent: disconnecting now could drop all but the first
        # (seen against mosquitto). Wait for the broker's acknowledgements, within the same bound.
        for info in clearing:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # never queued (connection lost): the next start clears it
                break
        self._client.disconnect()
        self._client.loop_stop()

    def announce(self) -> None:
        for topic, config in self.configs.items():
            self._client.publish(topic, config.to_json(), qos=CONFIG_QOS, retain=True)
        self.announcements += 1

    # -- paho callbacks (its network thread) -------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("Home Assistant discovery: %s", refusal_message(self.settings.broker, reason_code, self.settings.username))
            return
        with self._lock:
            self._seen.clear()
            self._connection += 1
            self._marker = f"{self.settings.client_id} {self._connection}".encode()
        _, mid = client.subscribe([(self.own_filter, CONFIG_QOS), (self.marker_topic, CONFIG_QOS), (self.birth_topic, 0)])
        with self._lock:
            self._sweep_mid = mid
        self.announce()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._lock:
            if mid != self._sweep_mid:
                return
            marker = self._marker
            self._timer = threading.Timer(SWEEP_TIMEOUT_S, self._sweep, kwargs={"marker": marker, "timed_out": True})
            self._timer.daemon = True
            self._timer.start()
        client.publish(self.marker_topic, marker, qos=CONFIG_QOS)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self.birth_topic:
            if message.payload == b"online":
                log.info("Home Assistant came online: announcing %d sensors again", len(self.configs))
                self.announce()
            return
        if message.topic == self.marker_topic:
            self._sweep(marker=message.payload)
            return
        if message.retain and message.payload:  # an announcement of an earlier run (ours come back live)
            with self._lock:
                self._seen.add(message.topic)

    def _sweep(self, marker: bytes | None, timed_out: bool = False) -> None:
        """Clear what an earlier run announced and this one does not; once per connection."""
        with self._lock:
            if marker is None or marker != self._marker:
                return  # another connection's, or done already
            self._marker = None
            if self._timer is not None:
                self._timer.cancel()
            stale = sorted(self._seen - set(self.configs))
            self._seen.clear()
        if timed_out:
            log.warning("Home Assistant discovery: the broker did not echo the sweep marker in %.0f s; "
                        "clearing only the stale sensors seen so far", SWEEP_TIMEOUT_S)
        infos = [self._client.publish(topic, b"", qos=CONFIG_QOS, retain=True) for topic in stale]
        with self._lock:
            self._clearing += infos
        if stale:
            log.info("Home Assistant discovery: removed %d sensors no longer served: %s", len(stale), ", ".join(stale))
        self._client.unsubscribe([self.own_filter, self.marker_topic])
        self.removed += stale
        self.swept.set()


def announced_models(models: Sequence[Any]) -> list[AnnouncedModel]:
    """AnnouncedModel for each loaded model (anything with a `.meta` carrying name, version, task, labels)."""
    return [AnnouncedModel(name=m.meta.name, version=m.meta.version, task=m.meta.task, labels=tuple(m.meta.labels))
            for m in models]
