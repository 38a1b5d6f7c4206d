"""The shipped units pass `systemd-analyze verify` (with ExecStart pointed at this venv)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"

pytestmark = pytest.mark.integration


def _verify(tmp_path: Path, unit: str, installed_name: str) -> subprocess.CompletedProcess:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/setup.sh --dev does)")
    edgekd = Path(sys.executable).parent / "edgekd"
    assert edgekd.exists(), "install edgekd into this venv first (scripts/setup.sh)"
    text = (UNITS / unit).read_text().replace("/opt/edgekd/venv/bin/edgekd", str(edgekd))
    target = tmp_path / installed_name
    target.write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(target)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("unit,name", [("edgekd.service", "edgekd.service"), ("edgekd@.service", "edgekd@kitchen.service")])
def test_unit_verifies(tmp_path, unit, name):
    res = _verify(tmp_path, unit, name)
    problems = [
        line
        for line in (res.stdout + res.stderr).splitlines()
        # a container without a running systemd cannot resolve the user at verify time
        if line.strip() and "edgekd" in line and "Failed to resolve" not in line
    ]
    assert res.returncode == 0, res.stdout + res.stderr
    assert problems == [], problems


def test_unit_is_notify_with_watchdog_and_hardening():
    text = (UNITS / "edgekd.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=edgekd",
        "SupplementaryGroups=audio",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert line in text, line
    assert "password" not in text.lower().replace("--mqtt-password-file", "")
