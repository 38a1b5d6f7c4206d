"""Hostile inputs at the edges: hops, stats interval, capture rate, gates, EDGEKD_* names, the MQTT
3.1.1 blind spot for ACL denials, and the set-up scripts.

Each bad input must be refused with exit code 2 and one line that names the thing and the fix,
with no traceback; each good edge case (a bare --hop with one model, a hop equal to the window)
must work. The commands run in-process through `edgekd.cli.main` (what the `edgekd` script runs);
the few that need a real process, broker or shell are marked slow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekd
from edgekd import cli
from tests.cli_in_process import run as run_cli

ROOT = Path(__file__).resolve().parents[2]
CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # 16 kHz speech, about 1.5 s


def assert_refused(code: int, err: str, *needles: str) -> None:
    """Exit 2, one line on stderr, no traceback, and every needle (the thing and the fix) in it."""
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.fixture
def second_onnx(tmp_path):
    from onnx_models import energy_model

    return energy_model(tmp_path / "other.onnx", task="level", name="other-test")


# -- hops ---------------------------------------------------------------------------------------

# the energy model's window is 1 s at 16 kHz
HOP_CASES = [
    pytest.param(["--hop", "loudness=2"], ["energy-test", "longer than its window (1 s)", "at most 1 s"], id="named-hop-over-window"),
    pytest.param(["--hop", "2"], ["energy-test", "longer than its window (1 s)", "--hop energy-test="], id="bare-hop-over-window"),
    pytest.param(["--hop", "energy=1.5"], ["longer than its window"], id="stem-hop-over-window"),
    pytest.param(["--hop", "loudness=0.00001"], ["hops", "between 0.01 and 60 seconds", "quarter of the model's window"], id="hop-under-one-sample"),
    pytest.param(["--hop", "0.00001"], ["hop", "between 0.01 and 60 seconds"], id="bare-hop-under-one-sample"),
    pytest.param(["--hop", "loudness=0"], ["between 0.01 and 60 seconds"], id="hop-zero"),
    pytest.param(["--hop", "loudness=-1"], ["between 0.01 and 60 seconds"], id="hop-negative"),
    pytest.param(["--hop", "loudness=nan"], ["between 0.01 and 60 seconds"], id="hop-nan"),
    pytest.param(["--hop", "loudness=inf"], ["between 0.01 and 60 seconds"], id="hop-inf"),
    pytest.param(["--hop", "1e9"], ["between 0.01 and 60 seconds"], id="bare-hop-huge"),
    pytest.param(["--hop", "loudness=fast"], ["--hop loudness=fast", "SECONDS must be a number"], id="hop-not-a-number"),
    pytest.param(["--hop", "fast"], ["--hop 'fast'", "NAME=SECONDS"], id="bare-hop-not-a-number"),
    pytest.param(["--hop", "=0.5"], ["NAME=SECONDS"], id="hop-empty-name"),
]


@pytest.mark.parametrize("args,needles", HOP_CASES)
def test_a_hop_out_of_bounds_is_refused(monkeypatch, capsys, energy_onnx, args, needles):
    code, _, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, "--stdout", *args)
    assert_refused(code, err, *needles)


def test_a_hop_equal_to_the_window_classifies_every_sample_once(monkeypatch, capsys, energy_onnx):
    code, out, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, "--stdout", "--hop", "1")
    results = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert len(results) >= 1 and [r["seq"] for r in results] == list(range(len(results)))


@pytest.mark.parametrize("command", ["serve", "classify"])
def test_a_bare_hop_applies_to_the_one_model(monkeypatch, capsys, energy_onnx, command):
    """`--hop 0.5` with one model means that model; the same as `--hop loudness=0.5`."""
    extra = ["--source", CLIP, "--stdout"] if command == "serve" else ["--json", CLIP]
    code, bare, err = run_cli(monkeypatch, capsys, command, "-m", energy_onnx, "--hop", "0.5", *extra)
    assert code == 0, err
    code, named, err = run_cli(monkeypatch, capsys, command, "-m", energy_onnx, "--hop", "loudness=0.5", *extra)
    assert code == 0, err
    code, default, err = run_cli(monkeypatch, capsys, command, "-m", energy_onnx, *extra)  # a quarter window
    assert code == 0, err
    if command == "serve":
        assert len(bare.splitlines()) == len(named.splitlines()) == 3 < len(default.splitlines())
    else:
        assert json.loads(bare)["windows"] == json.loads(named)["windows"] < json.loads(default)["windows"]


def test_a_bare_hop_applies_to_the_one_model_of_the_config_file(monkeypatch, capsys, tmp_path, energy_onnx):
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(f"[[models]]\npath = {str(energy_onnx)!r}\nthresholds = {{ loud = 0.9 }}\n")
    code, out, err = run_cli(monkeypatch, capsys, "serve", "--config", cfg, "--source", CLIP, "--stdout", "--hop", "0.5")
    assert code == 0, err
    assert len(out.splitlines()) == 3


def test_a_bare_hop_with_several_models_says_which_to_name(monkeypatch, capsys, energy_onnx, second_onnx):
    code, _, err = run_cli(
        monkeypatch, capsys, "serve", "-m", energy_onnx, "-m", second_onnx, "--source", CLIP, "--stdout", "--hop", "0.25"
    )
    assert_refused(code, err, "--hop 0.25", "2 models", "energy, other", "--hop NAME=0.25")


@pytest.mark.parametrize(
    "toml,needles",
    [
        pytest.param("hop = 5", ["hop 5 s", "longer than its window"], id="config-hop-over-window"),
        pytest.param("hop = 0.0001", ["models[0].hop", "between 0.01 and 60 seconds"], id="config-hop-tiny"),
        pytest.param("hop = nan", ["models[0].hop", "between 0.01 and 60 seconds"], id="config-hop-nan"),
        pytest.param('gate = "loudness"', ["models[0].gate", "MODEL_OR_TASK:LABEL"], id="config-gate-no-label"),
        pytest.param("refractory = 1e12", ["models[0].refractory", "86400"], id="config-refractory-huge"),
    ],
)
def test_a_models_table_out_of_bounds_is_refused(monkeypatch, capsys, tmp_path, energy_onnx, toml, needles):
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(f"[[models]]\npath = {str(energy_onnx)!r}\n{toml}\n")
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--config", cfg, "--source", CLIP, "--stdout")
    assert_refused(code, err, *needles)


# -- stats interval, capture rate, ring buffer, refractory -------------------------------------

@pytest.mark.parametrize(
    "args,needles",
    [
        pytest.param(["--stats-interval", "0"], ["stats_interval", "between 0.1 and 3600", "--stats-interval 10"], id="stats-zero"),
        pytest.param(["--stats-interval", "1e-9"], ["stats_interval", "between 0.1 and 3600"], id="stats-tiny"),
        pytest.param(["--stats-interval", "-5"], ["stats_interval", "between 0.1 and 3600"], id="stats-negative"),
        pytest.param(["--stats-interval", "nan"], ["stats_interval", "between 0.1 and 3600"], id="stats-nan"),
        pytest.param(["--stats-interval", "1e7"], ["stats_interval", "between 0.1 and 3600"], id="stats-huge"),
        pytest.param(["--source", "-", "--rate", "1"], ["audio.rate", "4000 to 384000 Hz", "--rate 16000"], id="stdin-rate-1"),
        pytest.param(["--source", "-", "--rate", "0"], ["audio.rate", "4000 to 384000 Hz"], id="stdin-rate-0"),
        pytest.param(["--source", "-", "--rate", "-16000"], ["audio.rate", "4000 to 384000 Hz"], id="stdin-rate-negative"),
        pytest.param(["--source", "-", "--rate", "10000000"], ["audio.rate", "4000 to 384000 Hz"], id="stdin-rate-huge"),
        pytest.param(["--source", "mic", "--rate", "100"], ["audio.rate", "4000 to 384000 Hz"], id="mic-rate-100"),
        pytest.param(["--refractory", "1e300"], ["defaults.refractory", "86400"], id="refractory-huge"),
    ],
)
def test_serve_numbers_out_of_bounds_are_refused(monkeypatch, capsys, energy_onnx, args, needles):
    argv = ["serve", "-m", energy_onnx, "--stdout", *args]
    if "--source" not in args:
        argv += ["--source", str(CLIP)]
    code, _, err = run_cli(monkeypatch, capsys, *argv)
    assert_refused(code, err, *needles)


@pytest.mark.parametrize(
    "toml,needles",
    [
        pytest.param("stats_interval = 0.001", ["stats_interval", "between 0.1 and 3600"], id="config-stats-tiny"),
        pytest.param("[audio]\nrate = 1", ["audio.rate", "4000 to 384000 Hz"], id="config-rate-1"),
        pytest.param("[audio]\nbuffer_seconds = 0.001", ["audio.buffer_seconds", "0.5"], id="config-ring-tiny"),
        pytest.param("[hops]\nloudness = 0.000001", ["hops", "between 0.01 and 60 seconds"], id="config-hops-tiny"),
        pytest.param('[gates]\nloudness = "x"', ["gates", "loudness", "MODEL_OR_TASK:LABEL"], id="config-gates-no-colon"),
    ],
)
def test_a_config_file_out_of_bounds_is_refused(monkeypatch, capsys, tmp_path, energy_onnx, toml, needles):
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(toml + "\n")
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--config", cfg, "-m", energy_onnx, "--source", CLIP, "--stdout")
    assert_refused(code, err, *needles)


def test_a_stats_interval_from_the_environment_is_bounded_too(monkeypatch, capsys, energy_onnx):
    monkeypatch.setenv("EDGEKD_STATS_INTERVAL", "0")
    code, _, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, "--stdout")
    assert_refused(code, err, "stats_interval", "between 0.1 and 3600")


# -- gates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value",
    [
        pytest.param("loudness=x", id="no-colon"),
        pytest.param("loudness=:loud", id="no-model"),
        pytest.param("loudness=level:", id="no-label"),
        pytest.param("loudness=level:loud:x", id="two-colons"),
        pytest.param("loudness= : ", id="blank"),
    ],
)
def test_a_malformed_gate_names_the_form_and_an_example(monkeypatch, capsys, energy_onnx, second_onnx, value):
    code, _, err = run_cli(
        monkeypatch, capsys, "serve", "-m", energy_onnx, "-m", second_onnx, "--source", CLIP, "--stdout", "--gate", value
    )
    assert_refused(code, err, f"--gate {value}", "MODEL_OR_TASK=OTHER:LABEL", "--gate covid=cough:cough")
    assert "unpack" not in err


@pytest.mark.parametrize(
    "gates,needles",
    [
        pytest.param(["loudness"], ["--gate 'loudness'", "NAME=VALUE"], id="no-equals"),
        pytest.param(["loudness=loudness:loud"], ["no other model is named 'loudness'"], id="gates-itself"),
        pytest.param(["loudness=level:shout"], ["'shout'", "labels ['quiet', 'loud']"], id="unknown-label"),
        pytest.param(["nomodel=level:loud"], ["gates.nomodel", "no model has that name"], id="unknown-model"),
        pytest.param(["loudness=level:loud", "level=loudness:loud"], ["gates form a loop", "remove the gate"], id="loop"),
    ],
)
def test_a_gate_that_cannot_work_is_refused(monkeypatch, capsys, energy_onnx, second_onnx, gates, needles):
    argv = ["serve", "-m", energy_onnx, "-m", second_onnx, "--source", CLIP, "--stdout"]
    for g in gates:
        argv += ["--gate", g]
    code, _, err = run_cli(monkeypatch, capsys, *argv)
    assert_refused(code, err, *needles)


# -- misspelt EDGEKD_* variables -----------------------------------------------------------------

@pytest.mark.parametrize(
    "name,closest",
    [
        pytest.param("EDGEKD_DEVICEID", "EDGEKD_DEVICE_ID", id="missing-underscore"),
        pytest.param("EDGEKD_MQTT_PASSWORD", "EDGEKD_MQTT__PASSWORD", id="single-underscore-nesting"),
        pytest.param("EDGEKD_STATS_INTERVALL", "EDGEKD_STATS_INTERVAL", id="extra-letter"),
        pytest.param("edgekd_threads", "EDGEKD_THREADS", id="lower-case"),
        pytest.param("EDGEKD_MQTT__", "EDGEKD_MQTT__", id="empty-key"),
        pytest.param("EDGEKD_AUDIO_SOURCE", "EDGEKD_AUDIO__SOURCE", id="table-single-underscore"),
        pytest.param("EDGEKD_HOP", "EDGEKD_HOPS__NAME", id="hop-without-name"),
    ],
)
def test_a_misspelt_variable_is_named_with_the_closest_one(monkeypatch, capsys, caplog, energy_onnx, name, closest):
    secret = "s3cret-value"
    monkeypatch.setenv(name, secret)
    with caplog.at_level(logging.WARNING, logger="edgekd.config"):
        code, _, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, "--stdout")
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.name == "edgekd.config"]
    assert len(warnings) == 1, warnings
    assert name in warnings[0] and "ignored" in warnings[0] and closest in warnings[0]
    assert secret not in warnings[0]  # a misspelt password variable must not be echoed


@pytest.mark.parametrize("name", ["EDGEKD_DATA", "EDGEKD_MODELS", "EDGEKD_DEVICE_ID", "EDGEKD_MQTT__URL", "EDGEKD_HOPS__LOUDNESS"])
def test_the_variables_edgekd_reads_are_not_warned_about(monkeypatch, capsys, caplog, energy_onnx, name):
    monkeypatch.setenv(name, "0.5" if name.startswith("EDGEKD_HOPS") else "kitchen" if "DEVICE" in name else "/tmp")
    if name == "EDGEKD_MQTT__URL":
        monkeypatch.setenv(name, "mqtt://127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="edgekd.config"):
        code, _, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, "--stdout")
    assert code == 0, err
    assert not [r for r in caplog.records if r.name == "edgekd.config"]


@pytest.mark.slow
def test_the_warning_reaches_the_terminal_of_a_real_process(energy_onnx):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_DEVICEID": "kitchen"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd", "serve", "-m", str(energy_onnx), "--source", str(CLIP), "--stdout",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "EDGEKD_DEVICEID" in proc.stderr and "did you mean EDGEKD_DEVICE_ID?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert '"device":"kitchen"' not in proc.stdout  # ignored, as the warning says


# -- MQTT: what an ACL denial looks like over 3.1.1 and 5 (a real mosquitto) ---------------------

DEVICE, DEVICE_PASSWORD = "kitchen", "kitchen-pw"
SHIPPED_ACL = ROOT / "examples" / "mosquitto" / "acl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def acl_broker(tmp_path):
    """Start a mosquitto on loopback with a password for DEVICE and the given ACL file; stopped after."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    procs: list[subprocess.Popen] = []

    def start(acl: Path) -> str:
        port = _free_port()
        passwd = tmp_path / "passwd"
        passwd.write_text("")
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), DEVICE, DEVICE_PASSWORD], check=True, capture_output=True)
        passwd.chmod(0o600)
        conf = tmp_path / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}",
                 "log_type all", f"log_dest file {tmp_path / 'mosquitto.log'}"]
        if os.geteuid() == 0:
            import getpass

            lines.append(f"user {getpass.getuser()}")
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"mqtt://127.0.0.1:{port}"
            time.sleep(0.02)
        raise AssertionError(f"mosquitto did not start: {(tmp_path / 'mosquitto.log').read_text(errors='replace')}")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_the_stats_say_whether_an_acl_denial_can_be_seen(acl_broker, tmp_path, energy_onnx, protocol):
    """An ACL that lets the device write its status and stats but not its results: over MQTT 5 the
    denied results count as dropped; over 3.1.1 the broker cannot say so, and the stats admit it."""
    from edgekd.audio.sources import FileSource
    from edgekd.config import load_settings
    from edgekd.daemon import Daemon, build_runners
    from edgekd.model import Model
    from edgekd.mqtt.publisher import MqttPublisher
    from edgekd.mqtt.settings import MqttSettings

    acl = tmp_path / "acl"
    acl.write_text("pattern write edgekd/%u/status\npattern write edgekd/%u/stats\n")
    url = acl_broker(acl)
    settings = load_settings(overrides={"device_id": DEVICE, "models": [{"path": str(energy_onnx)}],
                                        "defaults": {"gate_db": "off"}}, environ={})
    models = [Model(energy_onnx)]
    publisher = MqttPublisher(MqttSettings(url=url, device_id=DEVICE, username=DEVICE, password=DEVICE_PASSWORD,
                                           protocol=protocol, outbox="memory"))
    publisher.start()
    assert publisher.wait_connected(5)
    daemon = Daemon(FileSource(CLIP), build_runners(settings, models), publisher, device=DEVICE, stats_interval=60)
    daemon.run()
    stats = daemon.stats()
    windows = stats.models[0].windows
    assert windows > 0 and stats.mqtt_protocol == protocol
    if protocol == "5":
        assert stats.acl_denials_visible is True
        assert stats.results_dropped == windows and publisher.published == 0
    else:  # the blind spot, said out loud
        assert stats.acl_denials_visible is False
        assert publisher.published == windows and stats.results_dropped == 0
    assert "Denied PUBLISH" in (tmp_path / "mosquitto.log").read_text(errors="replace")


def test_stats_without_mqtt_say_nothing_about_acl_denials(monkeypatch, capsys, energy_onnx):
    from edgekd.audio.sources import FileSource
    from edgekd.config import load_settings
    from edgekd.daemon import Daemon, build_runners
    from edgekd.model import Model
    from edgekd.sink import MemorySink

    settings = load_settings(overrides={"models": [{"path": str(energy_onnx)}]}, environ={})
    daemon = Daemon(FileSource(CLIP), build_runners(settings, [Model(energy_onnx)]), MemorySink(), device="d")
    daemon.run()
    stats = daemon.stats()
    assert stats.mqtt_protocol is None and stats.acl_denials_visible is None


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_the_shipped_acl_lets_the_home_assistant_sweep_marker_come_back(acl_broker, caplog, protocol):
    from edgekd.mqtt.ha_discovery import SWEEP_TIMEOUT_S, HaDiscovery
    from edgekd.mqtt.settings import MqttSettings

    url = acl_broker(SHIPPED_ACL)
    mqtt = MqttSettings(url=url, device_id=DEVICE, username=DEVICE, password=DEVICE_PASSWORD, protocol=protocol,
                        outbox="memory")
    with caplog.at_level(logging.INFO, logger="edgekd.mqtt.ha_discovery"):
        ha = HaDiscovery(mqtt, {}).start()
        try:
            assert ha.swept.wait(SWEEP_TIMEOUT_S + 5)
        finally:
            ha.close()
    assert not [r for r in caplog.records if "did not echo the sweep marker" in r.getMessage()]


# -- the demo ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("clip", [pytest.param(CLIP, id="one-clip"), pytest.param(None, id="playlist-two-windows")])
def test_the_demo_shows_the_offline_row_before_its_closing_line(tmp_path, energy_onnx, clip):
    """The closing line comes after the retained `offline` arrived, and says so. The playlist runs
    models of 1 s and 2 s windows: the shorter one hops by its own window, skipping no audio."""
    import io

    from onnx_models import energy_model

    from edgekd.demo import run_demo

    models = [energy_onnx]
    if clip is None:
        models.append(energy_model(tmp_path / "long.onnx", window_samples=32000, task="level", name="long-test"))
    out = io.StringIO()
    arrived = run_demo(models=models, clip=clip, realtime=False, out=out)
    lines = out.getvalue().splitlines()
    assert arrived > 0
    assert lines[-1].endswith("clip over, status offline."), lines[-1]
    assert lines[-2].split()[2:4] == ["status", "offline"], lines[-2]
    assert lines[-1].startswith(f"{arrived} of {arrived} results arrived")


# -- the set-up script ---------------------------------------------------------------------------

SETUP = ROOT / "scripts" / "setup.sh"


@pytest.fixture
def setup_copy(tmp_path):
    """scripts/setup.sh in a scratch tree whose .venv/bin/python is this interpreter, with a
    dpkg-query that says nothing is installed and an `id` that says we are not root."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, tree / "scripts" / "setup.sh")
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "python").symlink_to(sys.executable)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    return tree, env


def _setup(tree: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(tree / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_apt_keeps_debian_frontend_noninteractive_through_sudo(setup_copy):
    tree, env = setup_copy
    res = _setup(tree, env, "--dev", "--dry-run")
    assert res.returncode == 0, res.stderr
    apt = [line for line in res.stdout.splitlines() if "apt-get" in line and " install " in line]
    assert len(apt) == 1, res.stdout
    # `sudo env VAR=... apt-get`: sudo resets the environment, so the variable must be inside
    assert "would run: sudo env DEBIAN_FRONTEND=noninteractive apt-get" in apt[0]
    assert "mosquitto" in apt[0] and "shellcheck" in apt[0]
    assert "nothing changed" in res.stdout


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the CPU index matters on x86-64 only")
def test_torch_comes_from_the_cpu_index_when_it_answers(setup_copy, tmp_path):
    import http.server
    import threading

    tree, env = setup_copy
    served = tmp_path / "index"
    (served / "torch").mkdir(parents=True)
    (served / "torch" / "index.html").write_text("<html></html>")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}"
        res = _setup(tree, {**env, "TORCH_CPU_INDEX": index, "no_proxy": "127.0.0.1"}, "--dev", "--dry-run")
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr
    torch = [line for line in res.stdout.splitlines() if "torch==" in line]
    assert len(torch) == 1 and f"--index-url {index} torch==" in torch[0], res.stdout
    assert "--timeout" in torch[0] and "--retries" in torch[0]  # a flaky index must not stall for minutes
    assert "falling back" not in res.stderr


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the CPU index matters on x86-64 only")
def test_an_unreachable_cpu_index_falls_back_and_says_why(setup_copy):
    tree, env = setup_copy
    index = f"http://127.0.0.1:{_free_port()}/whl/cpu"  # nothing listens there
    res = _setup(tree, {**env, "TORCH_CPU_INDEX": index, "no_proxy": "127.0.0.1"}, "--dev", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"CPU wheel index {index} is unreachable (" in res.stderr
    assert "falling back to pip's configured index" in res.stderr and "CUDA build" in res.stderr
    torch = [line for line in res.stdout.splitlines() if "torch==" in line]
    assert len(torch) == 1 and "--index-url" not in torch[0], res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [["--cpu"], ["--dev", "--fast"]])
def test_setup_refuses_an_unknown_option_and_lists_the_known_ones(args):
    res = subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "unknown option" in res.stderr and "--dry-run" in res.stderr


def test_the_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: apt-get install shellcheck (scripts/setup.sh --dev does)")
    res = subprocess.run(["shellcheck", *map(str, sorted(ROOT.glob("scripts/*.sh")))], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_the_readme_says_to_install_git_before_the_clone():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    before_commands = readme.split("scripts/demo.sh", 1)[0]
    assert "apt-get install -y git" in before_commands and "Raspberry Pi OS Lite" in before_commands


# -- listen, bench and the MQTT reconnect delay ---------------------------------------------------

@pytest.mark.parametrize(
    "args,needles",
    [
        pytest.param(["--count", "0"], ["--count 0", "at least 1", "--count 10"], id="count-zero"),
        pytest.param(["--count", "-3"], ["--count -3", "at least 1"], id="count-negative"),
        pytest.param(["--timeout", "-1"], ["--timeout -1", "more than 0", "--timeout 30"], id="timeout-negative"),
        pytest.param(["--timeout", "0"], ["--timeout 0", "more than 0"], id="timeout-zero"),
        pytest.param(["--timeout", "nan"], ["--timeout nan", "more than 0"], id="timeout-nan"),
        pytest.param(["--timeout", "inf"], ["--timeout inf", "at most 604800"], id="timeout-inf"),
        pytest.param(["--wait-online", "-5"], ["--wait-online -5", "from 0 to 604800"], id="wait-online-negative"),
        pytest.param(["--wait-online", "nan"], ["--wait-online nan", "from 0 to 604800"], id="wait-online-nan"),
    ],
)
def test_listen_refuses_counts_and_times_out_of_bounds_before_connecting(monkeypatch, capsys, args, needles):
    # the broker port is closed: a bound that were not checked first would give a connection error instead
    code, _, err = run_cli(monkeypatch, capsys, "listen", "--broker", f"mqtt://127.0.0.1:{_free_port()}", *args)
    assert_refused(code, err, *needles)


@pytest.mark.parametrize(
    "toml,needles",
    [
        pytest.param("reconnect_min = 0.000001", ["mqtt.reconnect_min", "0.05"], id="reconnect-storm"),
        pytest.param("reconnect_max = 0", ["mqtt.reconnect_max", "0.05"], id="reconnect-max-zero"),
        pytest.param("outbox_max_age = 0.001", ["mqtt.outbox_max_age", "1"], id="outbox-expires-at-once"),
    ],
)
def test_a_reconnect_delay_that_would_hammer_the_broker_is_refused(monkeypatch, capsys, tmp_path, energy_onnx, toml, needles):
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(f"[mqtt]\nurl = 'mqtt://127.0.0.1:{_free_port()}'\n{toml}\n")
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--config", cfg, "-m", energy_onnx, "--source", CLIP)
    assert_refused(code, err, *needles)


@pytest.mark.parametrize("flag", ["--seconds", "--e2e-seconds"])
def test_bench_refuses_an_endless_run(monkeypatch, capsys, energy_onnx, flag):
    cli._register_optional()
    code, _, err = run_cli(monkeypatch, capsys, "bench", energy_onnx, "--no-memory", "--no-peak", flag, "inf")
    assert code == 2 and flag in err and "3600" in err and "Traceback" not in err


def test_a_runner_built_by_hand_with_a_malformed_gate_gets_the_form_not_an_unpack_error(energy_onnx):
    from edgekd.model import Model
    from edgekd.pipeline import ModelRunner, RunnerSpec, attach_gates
    from edgekd.postprocess import PostConfig

    model = Model(energy_onnx)
    spec = RunnerSpec(hop_samples=4000, post=PostConfig(), gate_db=None, gate="loudness")
    with pytest.raises(ValueError, match='expected "MODEL_OR_TASK:LABEL"') as info:
        attach_gates([ModelRunner(model, spec)])
    assert "unpack" not in str(info.value)
