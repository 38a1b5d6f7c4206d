"""Every payload a real `edgekd serve` sends through a real mosquitto validates against the
committed JSON Schemas in docs/schemas/ (what subscribers are told to use)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import edgekd
from edgekd.payloads import SCHEMA_VERSION

pytestmark = pytest.mark.integration

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas" / f"v{SCHEMA_VERSION}"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all", "events"])
def test_every_payload_sent_validates(mosquitto, energy_onnx, tmp_path, mode) -> None:
    from onnx_models import energy_model

    second = energy_model(tmp_path / "level.onnx", task="level", name="level-b", labels=("low", "high"))
    sub = mosquitto.subscribe("edgekd/schemas/#", count=200, timeout=20, qos=1)
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--model", str(second),
         "--source", str(CLIP), "--broker", mosquitto.url, "--device-id", "schemas", "--mode", mode,
         "--stats-interval", "0.2", "--realtime", "--threshold", "0.6"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    msgs = sub.wait_until(lambda ms: any(m.topic.endswith("/status") and m.payload == "offline" for m in ms), timeout=10)
    kinds: dict[str, int] = {}
    for m in msgs:
        kind = m.topic.rsplit("/", 1)[1]
        name = kind if kind in ("status", "stats") else "result"
        payload = m.payload if name == "status" else json.loads(m.payload)
        errors = [e.message for e in validator(name).iter_errors(payload)]
        assert not errors, (m.topic, errors, m.payload)
        kinds[name] = kinds.get(name, 0) + 1
    assert kinds.get("result", 0) >= 2 and kinds.get("stats", 0) >= 2 and kinds["status"] == 2, kinds
