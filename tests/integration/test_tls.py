"""TLS to a real mosquitto: verification on by default, a wrong CA refused with a clear message,
mutual TLS with a client certificate. Certificates are made here by `openssl req`/`openssl x509`.

The broker has two listeners: plain (for mosquitto_sub, the independent checker) and TLS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekd.mqtt.connection import BrokerRefusedError
from edgekd.mqtt.publisher import MqttPublisher
from edgekd.mqtt.settings import MqttSettings
from edgekd.payloads import ResultPayload
from payload_factory import make_result

pytestmark = pytest.mark.integration

DEVICE = "tls-dev"
TOPIC = f"edgekd/{DEVICE}/emotion"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "2", "-subj", f"/CN=edgekd test {name}", cwd=folder)
    return folder / f"{name}.crt", folder / f"{name}.key"


def make_cert(folder: Path, name: str, ca: str, cn: str, san: str | None = None) -> tuple[Path, Path]:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}", cwd=folder)
    extra: list[str] = []
    if san:
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *extra, cwd=folder)
    (folder / f"{name}.key").chmod(0o600)
    return folder / f"{name}.crt", folder / f"{name}.key"


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    rogue_crt: Path
    rogue_key: Path
    misnamed_crt: Path
    misnamed_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, _ = make_ca(d, "ca")
    other, _ = make_ca(d, "other")
    server_crt, server_key = make_cert(d, "server", "ca", "127.0.0.1", san="IP:127.0.0.1")
    client_crt, client_key = make_cert(d, "client", "ca", DEVICE)
    rogue_crt, rogue_key = make_cert(d, "rogue", "other", DEVICE)  # right name, signed by someone else
    misnamed_crt, misnamed_key = make_cert(d, "misnamed", "ca", "broker.example", san="DNS:broker.example")
    return Pki(ca, other, server_crt, server_key, client_crt, client_key, rogue_crt, rogue_key, misnamed_crt, misnamed_key)


def tls_broker(mosquitto_factory, pki: Pki, *, require_certificate: bool, misnamed: bool = False):
    port = free_port()
    crt, key = (pki.misnamed_crt, pki.misnamed_key) if misnamed else (pki.server_crt, pki.server_key)
    conf = (
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {crt}\nkeyfile {key}\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
    )
    broker = mosquitto_factory(extra_conf=conf)
    return broker, f"mqtts://127.0.0.1:{port}"


def result(seq: int) -> ResultPayload:
    return make_result(seq, device=DEVICE, model_hash="abc", run="1", task="emotion", label="calm", score=0.9,
                       other="angry", detected=True)


def settings(url: str, **kw) -> MqttSettings:
    return MqttSettings(url=url, device_id=DEVICE, reconnect_min=0.1, reconnect_max=0.3, outbox="memory", **kw)


def publish_one(s: MqttSettings, broker) -> list:
    sub = broker.subscribe(TOPIC, count=1, timeout=10, qos=1)
    with MqttPublisher(s) as pub:
        assert pub.wait_connected(10), pub.last_error
        pub.publish_result(result(0))
        deadline = time.monotonic() + 10
        while pub.published < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    return sub.wait()


@pytest.mark.slow
def test_mqtts_with_the_right_ca_delivers(mosquitto_factory, pki):
    broker, url = tls_broker(mosquitto_factory, pki, require_certificate=False)
    got = publish_one(settings(url, ca_file=pki.ca), broker)
    assert [m.json()["seq"] for m in got] == [0]


@pytest.mark.parametrize("ca", ["other", "system", "right-ca-wrong-name"])
def test_a_broker_certificate_that_does_not_verify_is_refused_with_a_clear_message(mosquitto_factory, pki, ca):
    """Verification is on by default: without ca_file the system CAs are used, and they do not
    know the test CA either; a certificate from the right CA for another host name is refused too."""
    broker, url = tls_broker(mosquitto_factory, pki, require_certificate=False, misnamed=ca == "right-ca-wrong-name")
    s = settings(url, ca_file=pki.other_ca) if ca == "other" else settings(url, ca_file=pki.ca) if ca != "system" else settings(url)
    pub = MqttPublisher(s)
    pub.start()
    try:
        with pytest.raises(BrokerRefusedError) as info:
            pub.wait_connected(10)
    finally:
        pub.close(timeout=0.5)
    message = str(info.value)
    assert url in message and "TLS certificate was not accepted" in message and "set ca_file" in message


@pytest.mark.slow
def test_mutual_tls_needs_a_client_certificate_signed_by_the_brokers_ca(mosquitto_factory, pki):
    broker, url = tls_broker(mosquitto_factory, pki, require_certificate=True)
    got = publish_one(settings(url, ca_file=pki.ca, cert_file=pki.client_crt, key_file=pki.client_key), broker)
    assert [m.json()["seq"] for m in got] == [0]
    cases = [({}, "may require a client certificate: set cert_file and key_file"),
             ({"cert_file": pki.rogue_crt, "key_file": pki.rogue_key}, f"may not accept the client certificate cert_file '{pki.rogue_crt}'")]
    for cert, says in cases:
        pub = MqttPublisher(settings(url, ca_file=pki.ca, **cert))
        pub.start()
        try:
            # TLS 1.3: the handshake looks fine to the client, then the broker closes the connection
            assert pub.wait_connected(2) is False
            assert pub.last_error and url in pub.last_error and says in pub.last_error, pub.last_error
        finally:
            pub.close(timeout=0.5)
    assert "certificate" in broker.log_text().lower()


@pytest.mark.slow
def test_serve_to_a_broker_with_a_wrong_ca_is_one_line_and_exit_2(mosquitto_factory, pki, energy_onnx, tmp_path):
    broker, url = tls_broker(mosquitto_factory, pki, require_certificate=False)
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(f'[mqtt]\nurl = "{url}"\nca_file = "{pki.other_ca}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    clip = Path(__file__).resolve().parents[2] / "edgekd" / "assets" / "YAF_bar_angry.flac"
    proc = subprocess.run([sys.executable, "-m", "edgekd", "serve", "--config", str(cfg), "--model", str(energy_onnx),
                           "--source", str(clip), "--device-id", DEVICE], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"edgekd: MQTT broker {url}: its TLS certificate was not accepted") and "ca_file" in last
