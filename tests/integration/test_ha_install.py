"""deploy/install.sh turns Home Assistant discovery on in the config it writes (off with
--no-ha-discovery), and --metrics-port writes the key and installs the metrics extra."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgekd.config import load_settings

pytestmark = pytest.mark.integration

INSTALL = Path(__file__).resolve().parents[2] / "deploy" / "install.sh"


def install(root: Path, model: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    res = subprocess.run(["bash", str(INSTALL), "--dry-run", "--root", str(root), "--model", str(model), *args],
                         capture_output=True, text=True, timeout=60)
    return res, root / "etc/edgekd/config.toml"


def pip_line(stdout: str) -> str:
    """The (printed, shell-quoted) pip install of edgekd itself."""
    return next(line for line in stdout.splitlines() if "pip install" in line and "upgrade" not in line)


def test_discovery_is_on_by_default(tmp_path, energy_onnx) -> None:
    res, cfg = install(tmp_path / "r", energy_onnx)
    assert res.returncode == 0, res.stderr
    settings = load_settings(cfg, environ={})
    assert (settings.ha_discovery, settings.ha_discovery_prefix, settings.metrics_port) == (True, "homeassistant", None)
    assert "metrics" not in pip_line(res.stdout)  # no metrics extra unless asked


def test_no_ha_discovery_and_a_metrics_port(tmp_path, energy_onnx) -> None:
    res, cfg = install(tmp_path / "r", energy_onnx, "--no-ha-discovery", "--metrics-port", "9108")
    assert res.returncode == 0, res.stderr
    settings = load_settings(cfg, environ={})
    assert (settings.ha_discovery, settings.metrics_port, settings.metrics_host) == (False, 9108, "127.0.0.1")
    assert "mic" in pip_line(res.stdout) and "metrics" in pip_line(res.stdout)


def test_a_bad_metrics_port_is_refused(tmp_path, energy_onnx) -> None:
    res, _ = install(tmp_path / "r", energy_onnx, "--metrics-port", "http")
    assert res.returncode == 2 and "--metrics-port must be a port number" in res.stderr
