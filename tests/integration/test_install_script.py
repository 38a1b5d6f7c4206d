"""deploy/install.sh run with --dry-run into a temporary root, and shellcheck on the scripts."""

import shutil
import subprocess
from pathlib import Path

import pytest

from edgekd.config import load_settings, mqtt_settings

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
pytestmark = pytest.mark.integration


def run_install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def model(energy_onnx):
    return energy_onnx


def test_dry_run_into_a_root_writes_config_unit_models_and_touches_nothing_else(tmp_path, model):
    root = tmp_path / "root"
    res = run_install("--dry-run", "--root", str(root), "--broker", "mqtt://broker.local:1884",
                      "--device-id", "kitchen", "--model", str(model))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    # the system-changing steps are printed, not run
    for step in ("apt-get install", "useradd --system", "-m venv", "pip install", "systemctl enable edgekd.service"):
        assert "would run:" in out and step in out, step
    cfg = root / "etc/edgekd/config.toml"
    assert (root / "etc/systemd/system/edgekd.service").is_file()
    assert (root / "etc/systemd/system/edgekd@.service").is_file()
    assert (root / "opt/edgekd/models" / model.name).is_file()
    # the written config is valid for the daemon
    settings = load_settings(cfg)
    assert settings.device_id == "kitchen"
    assert settings.models[0].path == f"/opt/edgekd/models/{model.name}"
    assert mqtt_settings(settings).url == "mqtt://broker.local:1884"
    assert oct(cfg.stat().st_mode & 0o777) == "0o640"


def test_second_run_keeps_the_users_config(tmp_path, model):
    root = tmp_path / "root"
    assert run_install("--dry-run", "--root", str(root), "--model", str(model)).returncode == 0
    cfg = root / "etc/edgekd/config.toml"
    cfg.write_text(cfg.read_text().replace('source = "mic"', 'source = "mic:USB"'))
    res = run_install("--dry-run", "--root", str(root), "--model", str(model))
    assert res.returncode == 0 and "kept existing" in res.stdout
    assert 'source = "mic:USB"' in cfg.read_text()


def test_password_goes_to_a_root_only_credential_never_into_unit_or_config(tmp_path, model):
    root = tmp_path / "root"
    secret = tmp_path / "pw"
    secret.write_text("s3cret-pw\n")
    res = run_install("--dry-run", "--root", str(root), "--model", str(model),
                      "--mqtt-username", "pi", "--mqtt-password-file", str(secret))
    assert res.returncode == 0, res.stderr
    cred = root / "etc/edgekd/credentials/mqtt-password"
    assert cred.read_text() == "s3cret-pw\n"
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    dropin = (root / "etc/systemd/system/edgekd.service.d/credentials.conf").read_text()
    assert "LoadCredential=mqtt-password:/etc/edgekd/credentials/mqtt-password" in dropin
    for f in root.rglob("*"):
        if f.is_file() and f != cred:
            assert "s3cret-pw" not in f.read_text(errors="replace"), f
    assert "s3cret-pw" not in res.stdout + res.stderr


def test_uninstall_removes_code_and_unit_and_keeps_config_unless_purged(tmp_path, model):
    root = tmp_path / "root"
    assert run_install("--dry-run", "--root", str(root), "--model", str(model)).returncode == 0
    assert run_install("--uninstall", "--dry-run", "--root", str(root)).returncode == 0
    assert not (root / "opt/edgekd").exists()
    assert not (root / "etc/systemd/system/edgekd.service").exists()
    assert (root / "etc/edgekd/config.toml").exists()
    assert run_install("--uninstall", "--purge", "--dry-run", "--root", str(root)).returncode == 0
    assert not (root / "etc/edgekd").exists()


@pytest.mark.parametrize("args,needle", [
    (["--broker", "tcp://x"], "--broker must start with mqtt:// or mqtts://"),
    (["--provider", "gpu"], "--provider must be cpu, cuda or tensorrt"),
    (["--model", "/nonexistent.onnx"], "cannot read model /nonexistent.onnx"),
    (["--bogus"], "unknown option --bogus"),
])
def test_bad_flags_are_refused_with_a_clear_message(tmp_path, args, needle):
    res = run_install("--dry-run", "--root", str(tmp_path / "r"), *args)
    assert res.returncode == 2
    assert needle in res.stderr


def test_shellcheck_passes_on_every_script():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: apt-get install shellcheck (scripts/setup.sh --dev does)")
    scripts = [*ROOT.glob("deploy/*.sh"), *ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"]
    res = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
