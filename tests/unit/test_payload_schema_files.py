"""docs/schemas/ is what `edgekd schema --out docs/schemas` writes: committed files and code agree."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from edgekd.mqtt.schema import all_schemas, schema_text, write_schemas
from edgekd.payloads import SCHEMA_VERSION

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
REGENERATE = "regenerate with: edgekd schema --out docs/schemas (and bump SCHEMA_VERSION if a field changed meaning)"


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_committed_schema_equals_the_generated_one(name: str) -> None:
    path = DOCS / f"v{SCHEMA_VERSION}" / f"{name}.schema.json"
    assert path.is_file(), f"{path} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == schema_text(all_schemas()[name]), f"{path} is stale; {REGENERATE}"


def test_no_stray_files_in_the_current_version() -> None:
    names = {p.name for p in (DOCS / f"v{SCHEMA_VERSION}").iterdir()}
    assert names == {f"{n}.schema.json" for n in all_schemas()}


def test_write_schemas_writes_valid_2020_12_schemas(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"v{SCHEMA_VERSION}/{n}.schema.json" for n in all_schemas()
    ]
    for p in paths:
        schema = json.loads(p.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"urn:edgekd:schema:v{SCHEMA_VERSION}:{p.name.removesuffix('.schema.json')}"


def test_a_payload_of_another_version_is_refused() -> None:
    schema = all_schemas()["stats"]
    validator = jsonschema.Draft202012Validator(schema)
    assert any(e.validator == "const" for e in validator.iter_errors({"schema_version": SCHEMA_VERSION + 1}))
    assert any("schema_version" in e.message for e in validator.iter_errors({}))
