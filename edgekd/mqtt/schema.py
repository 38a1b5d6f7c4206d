"""JSON Schemas of the payloads edgekd publishes, for subscribers (`edgekd schema`).

Each schema is pydantic's `model_json_schema()` of a model in edgekd.payloads (with
`schema_version` pinned by `const`), with a `$id` that carries the schema version (e.g. `urn:edgekd:schema:v1:result`; a URN, so that it claims no web
address) and the JSON Schema dialect it is written in. The status topic carries a bare string, described here as well.
"""

from __future__ import annotations

import json
from pathlib import Path
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


def _open(node: Any) -> Any:
    """Drop `additionalProperties: false` everywhere: adding an optional field keeps the schema
    version (edgekd.payloads), so a subscriber's copy of v<N> must accept payloads that have it."""
    if isinstance(node, dict):
        return {k: _open(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open(v) for v in node]
    return node


def all_schemas() -> dict[str, dict[str, Any]]:
    """Name -> JSON Schema of every payload: `result`, `stats` and `status`."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in ALL_PAYLOADS.items():
        schema = model.model_json_schema(mode="serialization")
        # A payload of another schema version must not validate against this one; every payload
        # edgekd sends has the field (model_dump_json writes defaults).
        schema["properties"]["schema_version"]["const"] = SCHEMA_VERSION
        schema["required"] = ["schema_version", *schema.get("required", [])]
        out[name] = {"$schema": DIALECT, "$id": schema_id(name), **_open(schema)}
    out["status"] = {"$schema": DIALECT, "$id": schema_id("status"), **_status_schema()}
    return out


def schema_text(schema: dict[str, Any]) -> str:
    """The exact text of a schema file (stable key order, two-space indent, final newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(root: str | Path, version: int = SCHEMA_VERSION) -> list[Path]:
    """Write `root/v<version>/<name>.schema.json` for every payload; returns the paths written.

    docs/schemas/ holds these files, one folder per schema version, so that a subscriber can pin
    the version it was written against; a test checks they equal what this code generates.
    """
    folder = Path(root) / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(schema_text(schema), encoding="utf-8")
        written.append(path)
    return written
