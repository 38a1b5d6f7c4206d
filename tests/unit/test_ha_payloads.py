"""Home Assistant discovery payloads: the exact JSON for a given model set (a contract: Home
Assistant reads these keys), and the rules that keep topics and ids valid."""

from __future__ import annotations

import json

import pytest

from edgekd import __version__
from edgekd.config import ConfigError, load_settings
from edgekd.mqtt.ha_discovery import AnnouncedModel, HaSensorConfig, discovery_configs
from edgekd.mqtt.topics import Topics, TopicError

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
MODELS = [AnnouncedModel("wav2tiny-emotion", "1.0", "emotion", EMOTIONS), AnnouncedModel("cough-net", "0.3", "cough", ("cough", "speech", "other"))]
AVAILABILITY = [{"topic": "edgekd/kitchen/status", "payload_available": "online", "payload_not_available": "offline"}]
DEVICE = {
    "identifiers": ["edgekd_kitchen"],
    "name": "edgekd kitchen",
    "manufacturer": "edgekd",
    "model": "edgekd audio classifier: wav2tiny-emotion 1.0, cough-net 0.3",
    "sw_version": __version__,
}
ORIGIN = {"name": "edgekd", "sw_version": __version__}
COMMON = {"availability": AVAILABILITY, "availability_mode": "latest", "device": DEVICE, "origin": ORIGIN, "qos": 1}


def payloads(models=MODELS, prefix="homeassistant") -> dict[str, dict]:
    configs = discovery_configs(Topics("edgekd", "kitchen"), models, prefix)
    return {topic: json.loads(c.to_json()) for topic, c in configs.items()}


def test_the_discovery_payloads_are_pinned() -> None:
    got = payloads()
    assert list(got) == [
        "homeassistant/sensor/edgekd_kitchen/emotion/config",
        "homeassistant/sensor/edgekd_kitchen/emotion_confidence/config",
        "homeassistant/sensor/edgekd_kitchen/emotion_latency/config",
        "homeassistant/sensor/edgekd_kitchen/emotion_inference/config",
        "homeassistant/sensor/edgekd_kitchen/cough/config",
        "homeassistant/sensor/edgekd_kitchen/cough_confidence/config",
        "homeassistant/sensor/edgekd_kitchen/cough_latency/config",
        "homeassistant/sensor/edgekd_kitchen/cough_inference/config",
        "homeassistant/sensor/edgekd_kitchen/cpu/config",
        "homeassistant/sensor/edgekd_kitchen/memory/config",
        "homeassistant/sensor/edgekd_kitchen/dropped_audio/config",
        "homeassistant/sensor/edgekd_kitchen/results_dropped/config",
    ]
    assert got["homeassistant/sensor/edgekd_kitchen/emotion/config"] == {
        "name": "Emotion",
        "unique_id": "edgekd_kitchen_emotion",
        "default_entity_id": "sensor.edgekd_kitchen_emotion",
        "state_topic": "edgekd/kitchen/emotion",
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": "edgekd/kitchen/emotion",
        "json_attributes_template": "{{ {'score': value_json.score, 'scores': value_json.scores, "
        "'detected': value_json.detected, 'event': value_json.event, 'model': value_json.model, "
        "'model_version': value_json.model_version, 'window_end': value_json.window_end} | tojson }}",
        "icon": "mdi:waveform",
        "device_class": "enum",
        "options": list(EMOTIONS),
        **COMMON,
    }
    assert got["homeassistant/sensor/edgekd_kitchen/emotion_confidence/config"] == {
        "name": "Emotion confidence",
        "unique_id": "edgekd_kitchen_emotion_confidence",
        "default_entity_id": "sensor.edgekd_kitchen_emotion_confidence",
        "state_topic": "edgekd/kitchen/emotion",
        "value_template": "{{ (value_json.score * 100) | round(1) }}",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "suggested_display_precision": 1,
        "icon": "mdi:percent",
        **COMMON,
    }
    assert got["homeassistant/sensor/edgekd_kitchen/cough_latency/config"] == {
        "name": "Cough pipeline latency p99",
        "unique_id": "edgekd_kitchen_cough_latency",
        "default_entity_id": "sensor.edgekd_kitchen_cough_latency",
        "state_topic": "edgekd/kitchen/stats",
        "value_template": "{% for m in value_json.models if m.task == 'cough' %}{{ m.pipeline_ms.p99 }}{% endfor %}",
        "device_class": "duration",
        "unit_of_measurement": "ms",
        "state_class": "measurement",
        "suggested_display_precision": 1,
        "entity_category": "diagnostic",
        "icon": "mdi:timer-outline",
        **COMMON,
    }
    assert got["homeassistant/sensor/edgekd_kitchen/dropped_audio/config"] == {
        "name": "Dropped audio",
        "unique_id": "edgekd_kitchen_dropped_audio",
        "default_entity_id": "sensor.edgekd_kitchen_dropped_audio",
        "state_topic": "edgekd/kitchen/stats",
        "value_template": "{{ value_json.dropped_audio_samples }}",
        "unit_of_measurement": "samples",
        "state_class": "total_increasing",
        "entity_category": "diagnostic",
        "icon": "mdi:microphone-off",
        **COMMON,
    }
    cpu = got["homeassistant/sensor/edgekd_kitchen/cpu/config"]
    assert (cpu["value_template"], cpu["unit_of_measurement"], cpu["entity_category"]) == (
        "{{ value_json.cpu_percent }}", "%", "diagnostic",
    )


def test_every_sensor_is_one_device_and_unique() -> None:
    got = payloads()
    assert len({p["unique_id"] for p in got.values()}) == len(got)
    assert len({p["default_entity_id"] for p in got.values()}) == len(got)
    assert all(p["device"] == DEVICE and p["availability"] == AVAILABILITY for p in got.values())
    # every unique id is also the topic's object id under the node id, as HA's docs advise
    assert all(topic == f"homeassistant/sensor/edgekd_kitchen/{p['unique_id'].removeprefix('edgekd_kitchen_')}/config"
               for topic, p in got.items())


def test_the_templates_read_fields_the_payloads_have() -> None:
    """Every value_json.<field> a template uses exists in the result or stats schema."""
    import re

    from edgekd.payloads import ModelStats, ResultPayload, StatsPayload

    fields = {"result": set(ResultPayload.model_fields), "stats": set(StatsPayload.model_fields)}
    for p in payloads().values():
        kind = "stats" if p["state_topic"].endswith("/stats") else "result"
        used = set(re.findall(r"value_json\.(\w+)", p["value_template"] + p.get("json_attributes_template", "")))
        assert used <= fields[kind], (p["unique_id"], used - fields[kind])
        for path in re.findall(r"m\.(\w+)\.p99", p["value_template"]):
            assert path in ModelStats.model_fields


def test_the_label_sensor_is_an_enum_of_the_models_labels() -> None:
    """Home Assistant then offers the labels in automation editors and history; a model without
    labels gets a plain sensor, because Home Assistant refuses an empty options list."""
    got = payloads()
    cough = got["homeassistant/sensor/edgekd_kitchen/cough/config"]
    assert (cough["device_class"], cough["options"]) == ("enum", ["cough", "speech", "other"])
    bare = payloads(models=[AnnouncedModel("kws", "1", "keyword")])["homeassistant/sensor/edgekd_kitchen/keyword/config"]
    assert "device_class" not in bare and "options" not in bare


def test_announced_models_carry_the_labels_of_the_model_file() -> None:
    from types import SimpleNamespace

    from edgekd.mqtt.ha_discovery import announced_models

    meta = SimpleNamespace(name="wav2tiny-emotion", version="1.0", task="emotion", labels=EMOTIONS)
    assert announced_models([SimpleNamespace(meta=meta)]) == [MODELS[0]]


# Home Assistant's rules for these keys (homeassistant/components/mqtt/sensor.py,
# validate_sensor_state_and_device_class_config, and sensor/const.py, DEVICE_CLASS_UNITS; the same
# in 2025.4.4 and 2026.11.0, which refuses a config whose unit its device class does not list).
HA_UNITS = {"duration": {"d", "h", "min", "s", "ms", "\u03bcs"},
            "data_size": {"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB",
                          "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"}}


def test_device_classes_follow_home_assistants_rules() -> None:
    for topic, p in payloads().items():
        if "options" in p:
            assert p["options"] and p["device_class"] == "enum", topic
            assert "unit_of_measurement" not in p and "state_class" not in p, topic
        if p.get("device_class") in HA_UNITS:
            assert p["unit_of_measurement"] in HA_UNITS[p["device_class"]], topic
    classes = {t.split("/")[-2]: p.get("device_class") for t, p in payloads().items()}
    assert classes == {
        "emotion": "enum", "emotion_confidence": None, "emotion_latency": "duration", "emotion_inference": "duration",
        "cough": "enum", "cough_confidence": None, "cough_latency": "duration", "cough_inference": "duration",
        "cpu": None, "memory": "data_size", "dropped_audio": None, "results_dropped": None,
    }


def test_memory_is_in_mebibytes_as_the_stats_count_it() -> None:
    """The stats' rss_mb counts 2**20 bytes; Home Assistant's data_size reads "MB" as 10**6 bytes."""
    from edgekd.stats import ProcessMeter

    memory = payloads()["homeassistant/sensor/edgekd_kitchen/memory/config"]
    assert (memory["device_class"], memory["unit_of_measurement"]) == ("data_size", "MiB")
    with open("/proc/self/status") as f:  # the kernel's "kB" here are KiB
        vm_rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert abs(ProcessMeter.rss_mb() - vm_rss_kib / 1024) < 1.0


def test_a_custom_discovery_prefix_and_no_models() -> None:
    got = payloads(models=[], prefix="ha/discovery")
    assert list(got) == [f"ha/discovery/sensor/edgekd_kitchen/{o}/config" for o in ("cpu", "memory", "dropped_audio", "results_dropped")]
    with pytest.raises(TopicError):
        payloads(prefix="home/#")


def test_two_models_with_one_task_are_refused() -> None:
    with pytest.raises(ValueError, match="one model per task"):
        payloads(models=[AnnouncedModel("a", "1", "emotion"), AnnouncedModel("b", "1", "emotion")])


def test_unknown_keys_are_refused_by_the_typed_payload() -> None:
    with pytest.raises(Exception):
        HaSensorConfig.model_validate({**payloads()["homeassistant/sensor/edgekd_kitchen/cpu/config"], "bogus": 1})


def test_config_keys_and_their_errors() -> None:
    s = load_settings(overrides={"ha_discovery": True, "ha_discovery_prefix": "hass"}, environ={})
    assert (s.ha_discovery, s.ha_discovery_prefix, s.metrics_port, s.metrics_host) == (True, "hass", None, "127.0.0.1")
    assert load_settings(environ={"EDGEKD_HA_DISCOVERY": "true", "EDGEKD_METRICS_PORT": "9108"}).metrics_port == 9108
    with pytest.raises(ConfigError, match="ha_discovery_prefix"):
        load_settings(overrides={"ha_discovery_prefix": "a/+/b"}, environ={})
    with pytest.raises(ConfigError, match="metrics_port"):
        load_settings(overrides={"metrics_port": 70000}, environ={})


STATS = "edgekd/kitchen/stats"
EMOTION = "edgekd/kitchen/emotion"
COUGH = "edgekd/kitchen/cough"


def _latency(task: str, field: str) -> str:
    return f"{{% for m in value_json.models if m.task == '{task}' %}}{{{{ m.{field}.p99 }}}}{{% endfor %}}"


@pytest.mark.parametrize("object_id,name,state_topic,template,unit,state_class,category", [
    ("emotion", "Emotion", EMOTION, "{{ value_json.label }}", None, None, None),
    ("emotion_confidence", "Emotion confidence", EMOTION, "{{ (value_json.score * 100) | round(1) }}", "%", "measurement", None),
    ("emotion_latency", "Emotion pipeline latency p99", STATS, _latency("emotion", "pipeline_ms"), "ms", "measurement", "diagnostic"),
    ("emotion_inference", "Emotion inference latency p99", STATS, _latency("emotion", "inference_ms"), "ms", "measurement", "diagnostic"),
    ("cough", "Cough", COUGH, "{{ value_json.label }}", None, None, None),
    ("cough_confidence", "Cough confidence", COUGH, "{{ (value_json.score * 100) | round(1) }}", "%", "measurement", None),
    ("cough_latency", "Cough pipeline latency p99", STATS, _latency("cough", "pipeline_ms"), "ms", "measurement", "diagnostic"),
    ("cough_inference", "Cough inference latency p99", STATS, _latency("cough", "inference_ms"), "ms", "measurement", "diagnostic"),
    ("cpu", "CPU", STATS, "{{ value_json.cpu_percent }}", "%", "measurement", "diagnostic"),
    ("memory", "Memory", STATS, "{{ value_json.rss_mb }}", "MiB", "measurement", "diagnostic"),
    ("dropped_audio", "Dropped audio", STATS, "{{ value_json.dropped_audio_samples }}", "samples", "total_increasing", "diagnostic"),
    ("results_dropped", "Results dropped", STATS, "{{ value_json.results_dropped }}", None, "total_increasing", "diagnostic"),
])
def test_every_sensor_is_pinned(object_id, name, state_topic, template, unit, state_class, category) -> None:
    p = payloads()[f"homeassistant/sensor/edgekd_kitchen/{object_id}/config"]
    got = (p["name"], p["state_topic"], p["value_template"], p.get("unit_of_measurement"), p.get("state_class"),
           p.get("entity_category"), p["unique_id"], p["default_entity_id"])
    assert got == (name, state_topic, template, unit, state_class, category,
                   f"edgekd_kitchen_{object_id}", f"sensor.edgekd_kitchen_{object_id}")
    assert {k: p[k] for k in ("availability", "availability_mode", "device", "origin", "qos")} == COMMON
