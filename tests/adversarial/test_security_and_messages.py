"""Hostile input against the command line: secrets, bytes, terminals and misleading messages.

Each case runs a real `edgekd` command (in this process through `main`, or as a child process
where the operating system must play a part: file permissions, a sound system without a card,
native libraries writing to stderr) and asserts what a user would see: one line that names the
thing and the fix, the exit code, no traceback, and nothing already captured lost.

Brokers are real: mosquitto with a plain and a TLS listener; the other "brokers" are real
sockets that are not MQTT (an SSH banner, a server that never answers).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import edgekd
from edgekd.cli import main
from edgekd.config import ConfigError, load_settings, mqtt_settings
from edgekd.mqtt.url import BrokerUrlError, parse_broker_url, redact_url
from onnx_models import energy_model

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 2.1 s, 16 kHz
ROOT = Path(__file__).resolve().parents[2]
CONTROL = ["\x1b[31m", "\x1b]0;owned\x07", "\n2026-01-01 ERROR forged line", "\r", "\u202e", "\x9b2J", "\x7f", "\x00"]


def run_cli(monkeypatch, capfd, *args: object) -> tuple[int, str, str]:
    """Run `edgekd ARGS` in this process; (exit code, stdout, stderr) at the file-descriptor level."""
    monkeypatch.setattr("sys.argv", ["edgekd", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def one_line_error(code: int, err: str, expected_code: int = 2) -> str:
    """The single `edgekd: ...` line of a user error, after checking the exit code and the shape."""
    assert code == expected_code, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgekd: "), err
    return lines[0]


def no_raw_controls(text: str) -> bool:
    """True when nothing in `text` can steer a terminal (the line breaks between lines aside)."""
    return not any(c in text for c in ("\x1b", "\x07", "\r", "\u202e", "\x9b", "\x7f", "\x00"))


# -- Security: a password in a broker URL is never printed ------------------------------------

PASSWORDS = ["pa/ss", "p@ss", "a/b@c", "//lead", "trail@", "p:w/x@y#z?q", "pässwörd/ü@", "sp ace/@"]
SECRET = "s3cr3t-"  # every password below carries it, so that its absence can be checked


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("where", ["environment", "config file", "--broker flag"])
def test_a_password_in_the_broker_url_is_never_echoed(monkeypatch, capfd, tmp_path, where, password):
    secret = SECRET + password
    url = f"mqtt://alice:{secret}@broker.lan:1883"
    args = ["listen", "--timeout", "1"]
    if where == "environment":
        monkeypatch.setenv("EDGEKD_MQTT__URL", url)
    elif where == "config file":
        cfg = tmp_path / "edgekd.toml"
        cfg.write_text(f"[mqtt]\nurl = {json.dumps(url)}\n", encoding="utf-8")
        args += ["--config", cfg]
    else:
        args += ["--broker", url]
    code, out, err = run_cli(monkeypatch, capfd, *args)
    line = one_line_error(code, err)
    assert "s3cr3t" not in out + err and "alice" not in out + err
    assert "credentials do not belong in the URL" in line and "password_file" in line
    assert "mqtt://***@broker.lan:1883" in line


@pytest.mark.parametrize("value", ["mqtt://alice:s3cr3t@host", "mqtt://alice:s3/cr3t@host", "s3cr3t"])
@pytest.mark.parametrize("where", ["EDGEKD_MQTT", "top-level mqtt key"])
def test_a_url_given_where_the_mqtt_table_belongs_is_not_echoed(monkeypatch, capfd, tmp_path, where, value):
    args = ["listen", "--timeout", "1"]
    if where == "EDGEKD_MQTT":
        monkeypatch.setenv("EDGEKD_MQTT", value)
    else:
        cfg = tmp_path / "edgekd.toml"
        cfg.write_text(f"mqtt = {json.dumps(value)}\n", encoding="utf-8")
        args += ["--config", cfg]
    code, out, err = run_cli(monkeypatch, capfd, *args)
    line = one_line_error(code, err)
    assert "s3" not in line and "cr3t" not in line and line.startswith("edgekd: config: mqtt:")


_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(scheme=st.sampled_from(["mqtt", "mqtts", "MQTT", "http", "ws", "tcp"]), user=st.text(max_size=12),
       password=st.text(min_size=1, max_size=24), host=_host, port=st.integers(1, 65535))
def test_redaction_hides_everything_between_the_scheme_and_the_last_at(scheme, user, password, host, port):
    text = f"{scheme}://{user}:{password}@{host}:{port}"
    assert redact_url(text) == f"{scheme}://***@{host}:{port}"


@settings(max_examples=100, deadline=None)
@given(user=st.text(max_size=12), password=st.text(min_size=1, max_size=24), host=_host)
def test_the_broker_url_error_does_not_depend_on_the_credentials(user, password, host):
    """Whatever the user name and password (any characters), the message is the same as for `x:y`."""

    def message(u: str, p: str) -> str:
        with pytest.raises(BrokerUrlError) as info:
            parse_broker_url(f"mqtts://{u}:{p}@{host}:8883")
        return str(info.value)

    assert message(user, password) == message("x", "y")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=6, max_size=24), host=_host)
def test_no_config_error_quotes_a_password_from_the_environment(password, host):
    assume(password.strip() == password and password not in "mqtt.url: broker URL credentials do not belong")
    environ = {"EDGEKD_MQTT__URL": f"mqtt://u:{password}@{host}", "EDGEKD_MQTT__USERNAME": "u"}
    with pytest.raises(ConfigError) as info:
        mqtt_settings(load_settings(environ=environ))
    assert password not in str(info.value)


@pytest.mark.parametrize("where", ["EDGEKD_DEVICE_ID", "EDGEKD_MQTT__PREFIX", "EDGEKD_MQTT__CLIENT_ID"])
def test_a_url_with_a_password_in_any_other_setting_is_not_echoed(monkeypatch, capfd, where):
    monkeypatch.setenv(where, "mqtt://alice:s3cr3t/@broker.lan")
    code, out, err = run_cli(monkeypatch, capfd, "listen", "--timeout", "1")
    if where == "EDGEKD_MQTT__CLIENT_ID":  # any printable client id is allowed: it is never printed
        assert "s3cr3t" not in out + err and "alice" not in out + err
        return
    line = one_line_error(code, err)
    assert "s3cr3t" not in line and "alice" not in line and "'mqtt://***@broker.lan'" in line


# -- Input hygiene: bytes that are not UTF-8 ----------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "classify", "listen"])
def test_a_config_file_that_is_not_utf8_is_one_line_naming_it(monkeypatch, capfd, tmp_path, energy_onnx, command):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('device_id = "küche"\n'.encode("latin-1"))
    extra = {"serve": ["-m", energy_onnx, "--source", CLIP, "--stdout"], "classify": ["-m", energy_onnx, CLIP],
             "listen": ["--timeout", "1"]}[command]
    code, _, err = run_cli(monkeypatch, capfd, command, "--config", cfg, *extra)
    line = one_line_error(code, err)
    assert f"config {cfg}: not UTF-8 text (line 1" in line and "save it as UTF-8" in line


@pytest.mark.parametrize("source", ["password_file", "systemd credential"])
def test_a_password_file_that_is_not_utf8_is_one_line_and_the_password_is_not_shown(monkeypatch, capfd, tmp_path, source):
    secret = "gehëim-pässwort"
    folder = tmp_path / "creds"
    folder.mkdir()
    pw = folder / ("mqtt-password" if source == "systemd credential" else "pw")
    pw.write_bytes(secret.encode("latin-1") + b"\n")
    cfg = tmp_path / "edgekd.toml"
    table = f'[mqtt]\nurl = "mqtt://127.0.0.1:9"\nusername = "u"\n'
    if source == "password_file":
        table += f'password_file = "{pw}"\n'
    else:
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    cfg.write_text(table)
    code, _, err = run_cli(monkeypatch, capfd, "listen", "--config", cfg, "--timeout", "1")
    line = one_line_error(code, err)
    assert f"password_file '{pw}' is not UTF-8 text" in line and "save the password as UTF-8" in line
    assert "geh" not in line and "wort" not in line and "\\x" not in line


@pytest.mark.parametrize("kind", ["model", "audio"])
def test_a_file_name_that_is_not_utf8_is_served_and_shown_escaped(monkeypatch, capfd, tmp_path, energy_onnx, kind):
    folder = os.fsdecode(bytes(tmp_path))
    model = Path(folder + os.fsdecode(b"/m\xff\x9b.onnx")) if kind == "model" else energy_onnx
    audio = Path(folder + os.fsdecode(b"/a\xfe\x9b.flac")) if kind == "audio" else CLIP
    if kind == "model":
        shutil.copy(energy_onnx, model)
    else:
        shutil.copy(CLIP, audio)
    code, out, err = run_cli(monkeypatch, capfd, "classify", "-m", model, audio)
    assert code == 0 and err == "" and no_raw_controls(out) and "\udc9b" not in out
    assert out.split("\t")[1:3] == ["loudness", "quiet"]
    assert (r"a\udcfe\udc9b.flac" in out) if kind == "audio" else out.startswith(str(CLIP))


@pytest.mark.parametrize("bad", ["ca_file junk", "ca_file latin-1 text", "cert_file without its key", "key_file junk"])
def test_tls_files_that_are_not_pem_are_one_line_naming_the_file(monkeypatch, capfd, tmp_path, bad):
    junk = tmp_path / "junk.pem"
    junk.write_bytes(bytes(range(256)) * 2 if "junk" in bad else "zertifikat für küche\n".encode("latin-1"))
    table = '[mqtt]\nurl = "mqtts://127.0.0.1:9"\n'
    if bad.startswith("ca_file"):
        table += f'ca_file = "{junk}"\n'
        says = f"ca_file '{junk}' is not a usable CA bundle"
    else:
        cert = tmp_path / "c.pem"
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        table += f'cert_file = "{cert}"\n' + (f'key_file = "{junk}"\n' if bad == "key_file junk" else "")
        says = f"cert_file '{cert}'" + (f" with key_file '{junk}'" if bad == "key_file junk" else " cannot be used")
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(table)
    code, _, err = run_cli(monkeypatch, capfd, "listen", "--config", cfg, "--timeout", "1")
    line = one_line_error(code, err)
    assert says in line and "PEM" in line


@pytest.mark.parametrize("key", ["USERNAME", "PASSWORD"])
def test_a_username_or_password_from_the_environment_that_is_not_utf8_is_one_line(monkeypatch, capfd, key):
    monkeypatch.setenv("EDGEKD_MQTT__USERNAME", "u")
    monkeypatch.setenv(f"EDGEKD_MQTT__{key}", os.fsdecode(b"geheim\xff"))
    code, _, err = run_cli(monkeypatch, capfd, "listen", "--broker", "mqtt://127.0.0.1:9", "--timeout", "1")
    line = one_line_error(code, err)
    assert f"mqtt.{key.lower()}: {key.lower()} is not UTF-8 text" in line and "set it as UTF-8" in line
    assert "geheim" not in line


@pytest.mark.parametrize("case", ["a file", "under a file", "a directory named like a schema file"])
def test_schema_out_somewhere_it_cannot_write_is_one_line(monkeypatch, capfd, tmp_path, case):
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me\n")
    if case == "a file":
        out, says = plain, "is a file, not a directory"
    elif case == "under a file":
        out, says = plain / "schemas", "Not a directory"
    else:
        (tmp_path / "s" / "v1" / "result.schema.json").mkdir(parents=True)
        out, says = tmp_path / "s", "Is a directory"
    code, stdout, err = run_cli(monkeypatch, capfd, "schema", "--out", out)
    line = one_line_error(code, err)
    assert line.startswith(f"edgekd: schema --out {out}:") and says in line and "give a directory" in line
    assert plain.read_text() == "keep me\n" and stdout == ""


# -- Input hygiene: control characters and escapes never reach the terminal ---------------------


@pytest.mark.parametrize("evil", CONTROL)
def test_info_escapes_control_characters_in_names_and_labels(monkeypatch, capfd, tmp_path, evil):
    path = energy_model(tmp_path / "m.onnx", props_override={
        "edgekd.model_name": f"name{evil}x", "edgekd.model_version": f"1{evil}",
        "edgekd.labels": json.dumps([f"quiet{evil}", "loud"]),
        "edgekd.contract_version": "2", "edgekd.background_labels": json.dumps([f"quiet{evil}"]),
        "edgekd.operating_point": json.dumps({"hop_s": 0.25, "thresholds": {f"quiet{evil}": 0.7}, "aim": f"aim{evil}"}),
    })
    code, out, err = run_cli(monkeypatch, capfd, "info", path)
    assert code == 0 and err == ""
    assert no_raw_controls(out) and len(out.splitlines()) == 11
    assert repr(evil)[1:-1] in out.splitlines()[0] and f"quiet{repr(evil)[1:-1]}, loud" in out
    code, out, _ = run_cli(monkeypatch, capfd, "info", "--json", path)  # JSON escapes them itself
    assert code == 0 and no_raw_controls(out) and json.loads(out)["labels"] == [f"quiet{evil}", "loud"]


@pytest.mark.parametrize("evil", CONTROL[:5])
def test_listen_escapes_what_any_publisher_sends(evil):
    from edgekd.mqtt.listen import format_line
    from edgekd.mqtt.received import decode
    from payload_factory import make_result

    payload = make_result(1, device="d", model=f"m{evil}", task="keyword", label=f"left{evil}").to_json()
    line = format_line(decode("edgekd", "edgekd/d/keyword", payload))
    assert line is not None and no_raw_controls(line) and "\n" not in line
    assert f"left{repr(evil)[1:-1]}" in line
    extra_key = json.dumps({**json.loads(payload), f"x{evil}": 1}).encode()  # the error quotes the key
    invalid = format_line(decode("edgekd", "edgekd/d/keyword", extra_key))
    assert invalid is not None and "invalid message" in invalid and f"x{repr(evil)[1:-1]}" in invalid
    assert no_raw_controls(invalid) and "\n" not in invalid


def test_the_log_escapes_a_models_name_and_the_error_line_a_files_name(tmp_path):
    path = energy_model(tmp_path / "m.onnx", props_override={"edgekd.model_name": "evil\x1b[2J\nFORGED ERROR"})
    proc = subprocess.run([sys.executable, "-m", "edgekd", "serve", "-m", path, "--source", CLIP, "--stdout"],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert no_raw_controls(proc.stderr) and "evil\\x1b[2J\\nFORGED ERROR" in proc.stderr
    assert not any(line.startswith("FORGED") for line in proc.stderr.splitlines())
    assert len(proc.stdout.splitlines()) == 5  # every window's result still came out
    bad = tmp_path / "clip\x1b[31m.wav"
    proc = subprocess.run([sys.executable, "-m", "edgekd", "serve", "-m", path, "--source", bad, "--stdout"],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2 and no_raw_controls(proc.stderr) and "clip\\x1b[31m.wav: no such file" in proc.stderr


def test_classify_escapes_a_file_name(monkeypatch, capfd, tmp_path, energy_onnx):
    named = tmp_path / "a\x1b[31mb\u202e.flac"
    shutil.copy(CLIP, named)
    code, out, err = run_cli(monkeypatch, capfd, "classify", "-m", energy_onnx, named)
    assert code == 0 and no_raw_controls(out + err) and "a\\x1b[31mb\\u202e.flac\tloudness\t" in out


# -- Messages that mislead: what the path really is ------------------------------------------------


_OPEN_SOCKETS: list[socket.socket] = []


def _special(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "directory":
        d = tmp_path / "dir.onnx"
        d.mkdir()
        return d, "is a directory, not a file"
    if kind == "fifo":
        f = tmp_path / "pipe"
        os.mkfifo(f)
        return f, "is a named pipe (FIFO), not a regular file"
    if kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        path = tmp_path / "sock"
        s.bind(str(path))
        _OPEN_SOCKETS.append(s)  # bound while the test runs
        return path, "is a socket, not a regular file"
    if kind == "dangling link":
        link = tmp_path / "link"
        link.symlink_to(tmp_path / "gone")
        return link, "no such file"
    return Path(kind), "is a device, not a regular file"


SPECIAL = ["directory", "fifo", "socket", "dangling link", "/dev/zero", "/dev/null"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_model_path_that_is_not_a_file_says_what_it_is(monkeypatch, capfd, tmp_path, kind):
    path, says = _special(kind, tmp_path)
    code, _, err = run_cli(monkeypatch, capfd, "info", path)
    line = one_line_error(code, err)
    assert line.startswith(f"edgekd: model {path}: {says}") and "--model" in line


@pytest.mark.parametrize("kind", SPECIAL)
def test_an_audio_path_that_is_not_a_file_says_what_it_is(monkeypatch, capfd, tmp_path, energy_onnx, kind):
    path, says = _special(kind, tmp_path)
    code, _, err = run_cli(monkeypatch, capfd, "serve", "-m", energy_onnx, "--source", path, "--stdout")
    line = one_line_error(code, err)
    assert line.startswith(f"edgekd: audio {path}: {says}") and "--source -" not in line and "wav, flac" in line
    # classify goes on with the other files and says which one failed
    code, out, err = run_cli(monkeypatch, capfd, "classify", "-m", energy_onnx, path, CLIP)
    assert code == 1 and f"audio {path}: {says}" in err and "Traceback" not in err
    assert out.count("\n") == 1 and out.startswith(f"{CLIP}\tloudness\t")


@pytest.mark.parametrize("kind", ["directory", "fifo", "/dev/zero"])
def test_a_config_path_that_is_not_a_file_says_what_it_is(monkeypatch, capfd, tmp_path, energy_onnx, kind):
    path, says = _special(kind, tmp_path)
    code, _, err = run_cli(monkeypatch, capfd, "serve", "--config", path, "-m", energy_onnx, "--stdout")
    line = one_line_error(code, err)
    assert line == f"edgekd: config {path}: {says}; pass the TOML file with --config"


IDENTITIES = ["root without its file capabilities", "an ordinary user"]


def _as(identity: str) -> list[str]:
    """argv prefix that runs a command as `identity`, under which a file chmod 000 cannot be read."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0:
        if identity != "an ordinary user":
            pytest.skip("not running as root")
        return []
    if setpriv is None:
        pytest.skip("running as root without setpriv: root reads every file")
    if identity == "an ordinary user":
        return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]  # nobody
    # root without the capabilities that let it read any file: permissions apply to it again
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


UNREADABLE = {  # what is locked -> (edgekd arguments, what the one line says)
    "model": (lambda p, m, c: ["info", p], "model {p}: cannot be read by this user"),
    "audio": (lambda p, m, c: ["serve", "-m", m, "--source", p, "--stdout"], "audio {p}: cannot be read by this user"),
    "config": (lambda p, m, c: ["serve", "--config", p, "-m", m, "--stdout"], "config {p}: cannot be read by this user"),
    "password_file": (lambda p, m, c: ["listen", "--config", c, "--timeout", "1"], "password_file '{p}' cannot be read by this user"),
    "schema --out": (lambda p, m, c: ["schema", "--out", p / "inside"], "schema --out {p}/inside: cannot write"),
}

# Runs each argv through edgekd's main in one child process: (exit code, stderr) per argv, as JSON.
_DRIVER = """
import contextlib, io, json, sys
from edgekd.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv, err, code = ["edgekd", *argv], io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(scope="module", params=IDENTITIES)
def unreadable(request) -> Iterator[dict[str, tuple[Path, int, str]]]:
    """Each thing locked (mode 000, or a 555 directory) and used by a user who may not read it."""
    prefix = _as(request.param)
    d = Path(tempfile.mkdtemp(prefix="edgekd-locked-"))  # not under pytest's 0700 folder: nobody must reach it
    d.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    model = energy_model(d / "m.onnx")
    paths, argvs = {}, []
    for what, (argv, _) in UNREADABLE.items():
        path = d / f"locked-{what.replace(' ', '')}"
        if what == "schema --out":
            path.mkdir()
        elif what == "config":
            path.write_text('device_id = "x"\n')
        else:
            shutil.copy(CLIP if what == "audio" else model, path)
        cfg = d / f"{path.name}.toml"
        cfg.write_text(f'[mqtt]\nurl = "mqtt://127.0.0.1:9"\nusername = "u"\npassword_file = "{path}"\n')
        path.chmod(0o555 if path.is_dir() else 0)
        paths[what] = path
        argvs.append([str(a) for a in argv(path, model, cfg)])
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", _DRIVER, json.dumps(argvs)],
                              capture_output=True, text=True, env=child_env(HOME=str(d)), timeout=120)
    finally:
        for path in paths.values():
            path.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    yield {what: (paths[what], code, err) for what, (code, err) in zip(UNREADABLE, json.loads(proc.stdout))}


@pytest.mark.parametrize("what", sorted(UNREADABLE))
def test_a_file_this_user_may_not_read_says_so(unreadable, what):
    path, code, err = unreadable[what]
    line = one_line_error(code, err)
    assert UNREADABLE[what][1].format(p=path) in line
    assert ("let this user read it" in line) or ("Permission denied" in line and "give a directory" in line)
    assert "System error" not in line and "no such file" not in line and "is not readable" not in line


# -- Messages that mislead: a port that is not the broker the URL describes ---------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FakeService:
    """A real TCP service that is not MQTT: it sends `banner` (or nothing) and keeps the connection."""

    def __init__(self, banner: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.banner = banner
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.banner:
                conn.sendall(self.banner)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(scope="module")
def listeners(tmp_path_factory):
    """mosquitto with a plain and a TLS listener, an SSH-like banner service and a silent one."""
    mosquitto, openssl = shutil.which("mosquitto") or "/usr/sbin/mosquitto", shutil.which("openssl")
    if not Path(mosquitto).exists() or openssl is None:
        pytest.skip("needs mosquitto and openssl: apt-get install mosquitto openssl")
    d = tmp_path_factory.mktemp("listeners")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "k.pem", "-out", "c.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], cwd=d, check=True, capture_output=True)
    plain, tls = _free_port(), _free_port()
    conf = [f"listener {plain} 127.0.0.1", "allow_anonymous true", f"listener {tls} 127.0.0.1",
            f"certfile {d / 'c.pem'}", f"keyfile {d / 'k.pem'}"]
    if os.geteuid() == 0:
        conf.append("user root")  # else it drops to user mosquitto and cannot read the key
    (d / "m.conf").write_text("\n".join(conf) + "\n")
    proc = subprocess.Popen([mosquitto, "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ssh, silent = _FakeService(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), _FakeService(b"")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", tls), timeout=1).close()
            socket.create_connection(("127.0.0.1", plain), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"plain": plain, "tls": tls, "ssh": ssh.port, "silent": silent.port}
    proc.terminate()
    proc.wait(10)
    ssh.close()
    silent.close()


WRONG_PORTS = {
    "plain MQTT to a TLS listener": ("mqtt", "tls", "if it is a TLS listener use mqtts://127.0.0.1:{port}"),
    "TLS to a plain MQTT listener": ("mqtts", "plain", "does not speak TLS: if it is a plain MQTT listener use mqtt://127.0.0.1:{port}"),
    "plain MQTT to an SSH server": ("mqtt", "ssh", "did not answer as an MQTT broker"),
    "plain MQTT to a silent server": ("mqtt", "silent", "did not answer as an MQTT broker"),
    "TLS to an SSH server": ("mqtts", "ssh", "does not speak TLS"),
}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(WRONG_PORTS))
def test_a_port_that_is_not_the_broker_the_url_describes_says_the_likely_cause(monkeypatch, capfd, listeners, case):
    scheme, target, says = WRONG_PORTS[case]
    port = listeners[target]
    code, _, err = run_cli(monkeypatch, capfd, "listen", "--broker", f"{scheme}://127.0.0.1:{port}", "--timeout", "1")
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgekd: ") and f"127.0.0.1:{port}" in last and says.format(port=port) in last
    assert "check the port" in last


@pytest.mark.integration
def test_the_right_scheme_on_each_listener_still_connects(monkeypatch, capfd, listeners):
    """The control: the same broker through its plain listener subscribes (listen times out with 1)."""
    code, out, err = run_cli(monkeypatch, capfd, "listen", "--broker", f"mqtt://127.0.0.1:{listeners['plain']}",
                             "--timeout", "0.5")
    assert code == 0 and out.startswith(f"listening on mqtt://127.0.0.1:{listeners['plain']}") and "edgekd:" not in err


# -- MP3 decoder lines and a machine without a sound card --------------------------------------


def _damaged_mp3(tmp_path: Path) -> Path:
    audio, rate = sf.read(CLIP, dtype="float32")
    good = tmp_path / "good.mp3"
    sf.write(good, np.tile(audio, 3), rate, format="MP3")
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    for i in range(2000, len(data) - 100, 1500):
        data[i : i + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    bad = tmp_path / "damaged.mp3"
    bad.write_bytes(bytes(data))
    return bad


def test_a_damaged_mp3_gives_one_warning_not_decoder_lines(tmp_path, energy_onnx):
    path = _damaged_mp3(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgekd", "serve", "-m", energy_onnx, "--source", path, "--stdout",
                           "--gate-db", "off"], capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "libmpg123" not in proc.stderr and "Note:" not in proc.stderr
    assert not any(line.startswith(("[", "Note:", "Warning:")) for line in proc.stderr.splitlines())
    decoder = [line for line in proc.stderr.splitlines() if "the decoder reported" in line]
    assert len(decoder) == 1 and f"WARNING edgekd.audio.decode: audio {path}: " in decoder[0] and "re-encode" in decoder[0]
    from edgekd.audio.decode import decode_file

    samples = len(decode_file(path).samples)  # what the decoder gives: every window of it is served
    assert len(proc.stdout.splitlines()) == 1 + (samples - 16000) // 4000


def test_classify_of_a_damaged_mp3_prints_its_result_and_one_warning(tmp_path, energy_onnx):
    path = _damaged_mp3(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgekd", "classify", "-m", energy_onnx, path, CLIP],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 0 and "libmpg123" not in proc.stderr and "Traceback" not in proc.stderr
    decoder = [line for line in proc.stderr.splitlines() if "the decoder reported" in line]
    assert len(decoder) == 1 and f"audio {path}: " in decoder[0] and "re-encode" in decoder[0]
    assert all(" WARNING edgekd." in line for line in proc.stderr.splitlines())  # nothing raw from the decoder
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [str(path), str(CLIP)]


def test_native_lines_are_caught_and_every_other_line_is_kept(capfd):
    from edgekd.audio import native_output

    with native_output.captured() as said:
        os.write(2, b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM sysdefault\n")
        os.write(2, b"2026-01-01 12:00:00,000 WARNING edgekd.mqtt: from another thread\n")
        os.write(2, b"[src/libmpg123/layer3.c:INT123_do_layer3():1850] error: bit deficit after dequant\n")
    assert said == ["ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM sysdefault",
                    "[src/libmpg123/layer3.c:INT123_do_layer3():1850] error: bit deficit after dequant"]
    assert capfd.readouterr().err == "2026-01-01 12:00:00,000 WARNING edgekd.mqtt: from another thread\n"


def _has_sound_card() -> bool:
    cards = Path("/proc/asound/cards")
    return cards.exists() and "no soundcards" not in cards.read_text()


@pytest.mark.slow
def test_the_default_microphone_without_a_sound_card_says_so_once_and_backs_off(tmp_path, energy_onnx):
    """The machine's own ALSA with no card (a container, a board without audio): PortAudio finds no
    input device. serve keeps retrying (a USB microphone may be plugged in) and says so once."""
    pytest.importorskip("pyaudio", reason="needs the mic extra")
    if _has_sound_card():
        pytest.skip("this machine has a sound card")
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "serve", "-m", energy_onnx, "--stdout", "--log-level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(HOME=str(tmp_path), PYTHONUNBUFFERED="1"))
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "(failure 2)" in line:  # the second try, logged at debug only
                break
        proc.terminate()
        rest = proc.communicate(timeout=20)[1]
    finally:
        proc.kill()
    err = "".join(seen) + rest
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "no audio input device" in warnings[0] and "arecord -l" in warnings[0], err
    assert "backoff up to 30 s" in warnings[0] and "logged again every 10 min" in warnings[0]
    assert not any(line.startswith(("ALSA lib", "Cannot connect", "jack", "Jack")) for line in err.splitlines())


class _NoCardPyAudio:
    """PyAudio's surface as MicSource uses it, on a machine with no input device: opening fails."""

    paInt16, paContinue = 8, 0

    class PyAudio:
        def get_device_count(self) -> int:
            return 0

        def open(self, **kwargs: object) -> None:
            raise OSError(-9996, "Invalid input device (no default output device)")

        def terminate(self) -> None:
            pass


def test_a_microphone_that_keeps_failing_is_logged_once_not_at_every_retry(monkeypatch, caplog):
    from edgekd.audio import sources
    from edgekd.audio.ringbuffer import RingBuffer

    monkeypatch.setattr(sources, "_pyaudio", lambda: _NoCardPyAudio)
    mic = sources.MicSource(retry_min=0.001, retry_max=0.002)
    stop = threading.Event()
    with caplog.at_level(logging.DEBUG, logger="edgekd.audio.sources"):
        worker = threading.Thread(target=mic.run, args=(RingBuffer(16000), stop))
        worker.start()
        deadline = time.monotonic() + 30
        while mic.failures < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        worker.join(10)
    assert mic.failures >= 50 and mic.state == "failed" and "no audio input device" in (mic.error or "")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "PortAudio finds no audio input device" in warnings[0]
    assert sum("retrying in" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) >= 49
