"""The JSON Schemas that `edgekd schema` prints validate what the publisher sends."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import jsonschema
import pytest

from edgekd.mqtt.schema import all_schemas
from edgekd.payloads import SCHEMA_VERSION, Latency, ModelStats, ResultPayload, StatsPayload

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_every_payload_has_a_versioned_id_and_a_dialect() -> None:
    schemas = all_schemas()
    assert set(schemas) == {"result", "stats", "status"}
    for name, schema in schemas.items():
        assert schema["$id"].endswith(f"v{SCHEMA_VERSION}:{name}")
        jsonschema.Draft202012Validator.check_schema(schema)


def test_real_payloads_validate_and_broken_ones_do_not() -> None:
    schemas = all_schemas()
    result = ResultPayload(
        id="d/h/0", device="d", model="m", model_version="1", model_hash="h", task="cough", label="cough",
        score=0.7, scores={"cough": 0.7, "other": 0.3}, detected=True, event="detection", seq=0,
        window_start=NOW, window_end=NOW, latency_ms=Latency(inference=1, pipeline=2),
    )
    stats = StatsPayload(
        device="d", time=NOW, uptime_s=3, source="mic", source_state="running", audio_seconds=3,
        dropped_audio_samples=0, results_dropped=0, queue_depth=0, broker_connected=True, cpu_percent=1.5,
        rss_mb=40, models=[ModelStats(model="m", task="cough", windows=12, gated=1, published=11, windows_per_s=4,
                                      inference_ms={"p50": 1.0}, pipeline_ms={"p50": 2.0})],
    )
    wire = json.loads(result.to_json())
    jsonschema.validate(wire, schemas["result"])
    jsonschema.validate(json.loads(stats.to_json()), schemas["stats"])
    jsonschema.validate("online", schemas["status"])
    # A field added later (optional, same schema version) must not break a subscriber's v<N> copy.
    jsonschema.validate({**wire, "added_later": 1}, schemas["result"])
    for broken in ({**wire, "score": 1.5}, {**wire, "schema_version": SCHEMA_VERSION + 1},
                   {k: v for k, v in wire.items() if k != "seq"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schemas["result"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("sleeping", schemas["status"])
