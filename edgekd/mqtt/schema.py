"""JSON Schemas of the payloads edgekd publishes, for subscribers (`edgekd schema`).

Each schema is pydantic's `model_json_schema()` of a model in edgekd.payloads, with a `$id` that
carries the schema version (e.g. `urn:edgekd:schema:v1:result`; a URN, so that it claims no web
address) and the JSON Schema dialect it is written in. The status topic carries a bare string, described here as well.
"""

from __future__ import annotations

from typing import Any

from edgekd.payloads import ALL_PAYLOADS, SCHEMA_VERSION

SCHEMA_BASE = "urn:edgekd:schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(name: str, version: int = SCHEMA_VERSION) -> str:
    return f"{SCHEMA_BASE}:v{version}:{name}"


def _status_schema() -> dict[str, Any]:
    return {
        "title": "Status",
        "description": "The retained <prefix>/<device>/status payload: the bare string online or offline "
        "(not JSON); offline is also the device's last will.",
        "type": "string",
        "enum": ["online", "offline"],
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """Name -> JSON Schema of every payload: `result`, `stats` and `status`."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in ALL_PAYLOADS.items():
        schema = model.model_json_schema(mode="serialization")
        out[name] = {"$schema": DIALECT, "$id": schema_id(name), **schema}
    out["status"] = {"$schema": DIALECT, "$id": schema_id("status"), **_status_schema()}
    return out
