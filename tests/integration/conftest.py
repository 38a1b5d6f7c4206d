"""Real parts for integration tests: a mosquitto broker of the test's own, and mosquitto_sub.

Fixtures
--------
`mosquitto`
    A running mosquitto on a free loopback port, anonymous access, its own config file, log and
    work directory under the test's tmp_path. Stopped (by its pid) after the test.
`mosquitto_sub_at(port, users=None)`
    mosquitto_sub against any broker on 127.0.0.1:PORT (e.g. an EmbeddedBroker), with the same
    `.sub` and `.subscribe` as below.
`mosquitto_factory(users=None, persistence=False, extra_conf="", start=True)`
    Makes more brokers: `users={"alice": "pw"}` writes a password file with `mosquitto_passwd`
    and turns anonymous access off; `persistence=True` keeps sessions and retained messages across
    `restart()`; `extra_conf` adds lines to the config (e.g. a TLS listener).

The broker object (`Mosquitto`)
-------------------------------
    .host, .port, .url ("mqtt://127.0.0.1:PORT"), .conf_path, .log_path, .log_text()
    .start(), .stop() (SIGTERM, waits), .kill() (SIGKILL), .restart() (same port), .running
    .sub(topic, count, timeout, ...) -> list[Message]
        runs `mosquitto_sub -h 127.0.0.1 -p PORT -t TOPIC -C COUNT -W TIMEOUT` and returns what
        arrived (fewer than `count` if it timed out). Retained messages count, as they would for
        any new subscriber.
    .subscribe(topic, count, timeout, ...) -> Subscription
        the same in the background; returns once mosquitto_sub holds its SUBACK, so nothing
        published afterwards is missed. `.wait()` -> list[Message] when it exits;
        `.wait_until(predicate, timeout)` polls; `.messages()` is what arrived so far; `.stop()`.

`Message` has .topic, .payload (str), .retained, .qos and .json().

mosquitto is a Debian package; without it these tests fail (they do not skip): CI installs it.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

INSTALL_HINT = "apt-get install mosquitto mosquitto-clients"
HOST = "127.0.0.1"
START_TIMEOUT_S = 5.0
_SEP = "\t"
_FORMAT = _SEP.join(["%r", "%q", "%t", "%p"])  # retained flag, qos, topic, payload


def _require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.fail(f"{binary} is not installed; integration tests need a real broker: {INSTALL_HINT}", pytrace=False)
    return path


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retained: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


def parse_sub_lines(text: str) -> list[Message]:
    """Messages from mosquitto_sub output in our -F format; debug (-d) lines are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split(_SEP, 3)
        if len(parts) == 4 and parts[0] in ("0", "1") and parts[1] in ("0", "1", "2"):
            out.append(Message(topic=parts[2], payload=parts[3], retained=parts[0] == "1", qos=int(parts[1])))
    return out


class Subscription:
    """A mosquitto_sub running in the background (see Mosquitto.subscribe)."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self._timeout = timeout
        # mosquitto_sub block-buffers a pipe; stdbuf makes it write each line as it arrives.
        argv = [shutil.which("stdbuf") or "stdbuf", "-oL", *argv]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._subscribed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            self._proc.kill()
            raise AssertionError(f"mosquitto_sub did not subscribe within {START_TIMEOUT_S} s: {self.output()}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.append(line.rstrip("\n"))
            if line.startswith("Subscribed (mid:"):
                self._subscribed.set()

    def output(self) -> str:
        return "\n".join(self._lines)

    def messages(self) -> list[Message]:
        """What arrived so far."""
        return parse_sub_lines(self.output())

    def wait_until(self, predicate: Callable[[list[Message]], bool], timeout: float) -> list[Message]:
        """Poll what arrived until `predicate(messages)` holds; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if predicate(messages):
                return messages
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise AssertionError(f"mosquitto_sub did not get what was expected within {timeout} s; got:\n{self.output()}")
            time.sleep(0.02)

    def wait(self) -> list[Message]:
        """Wait for mosquitto_sub to get its count or time out; return what arrived."""
        try:
            self._proc.wait(timeout=self._timeout + 5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=2)
        return self.messages()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class Mosquitto:
    """One mosquitto process with its own config, on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        extra_conf: str = "",
    ) -> None:
        self._binary = _require("mosquitto")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.users = dict(users or {})
        self.client = MosquittoSub(self.port, self.users)
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "log_type all",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # else it drops to user mosquitto and cannot read our files
        if self.users:
            passwd = workdir / "passwd"
            passwd.write_text("")
            for name, password in self.users.items():
                subprocess.run(
                    [_require("mosquitto_passwd"), "-b", str(passwd), name, password], check=True, capture_output=True
                )
            passwd.chmod(0o600)
            lines.append(f"password_file {passwd}")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        if extra_conf:
            lines.append(extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen([self._binary, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise AssertionError(f"mosquitto exited with {self._proc.returncode}: {err}\n{self.log_text()}")
            if _accepts(self.port):
                return
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"mosquitto did not accept on port {self.port} within {START_TIMEOUT_S} s\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait for the process to go."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        deadline = time.monotonic() + 2
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def sub(self, topic: str, count: int, timeout: float = 5.0, **kwargs: Any) -> list[Message]:
        """See MosquittoSub.sub (credentials default to the first of `users`)."""
        return self.client.sub(topic, count, timeout, **kwargs)

    def subscribe(self, topic: str, count: int, timeout: float = 10.0, **kwargs: Any) -> Subscription:
        """See MosquittoSub.subscribe (credentials default to the first of `users`)."""
        return self.client.subscribe(topic, count, timeout, **kwargs)


class MosquittoSub:
    """mosquitto_sub pointed at any broker on 127.0.0.1:PORT (ours, or an EmbeddedBroker)."""

    def __init__(self, port: int, users: dict[str, str] | None = None) -> None:
        self._sub_binary = _require("mosquitto_sub")
        self.port = port
        self.users = dict(users or {})
        self.started: list[Subscription] = []

    def _sub_argv(
        self,
        topic: str,
        count: int,
        timeout: float,
        *,
        username: str | None,
        password: str | None,
        qos: int,
        client_id: str | None,
        retained_only: bool,
        debug: bool,
    ) -> list[str]:
        argv = [self._sub_binary, "-h", HOST, "-p", str(self.port), "-t", topic, "-F", _FORMAT]
        argv += ["-C", str(count), "-W", str(max(1, round(timeout))), "-q", str(qos)]
        if username is None and self.users:
            username, password = next(iter(self.users.items()))
        if username is not None:
            argv += ["-u", username]
        if password is not None:
            argv += ["-P", password]
        if client_id is not None:
            argv += ["-i", client_id, "-c"]  # a persistent session: queued across our reconnects
        if retained_only:
            argv.append("--retained-only")
        if debug:
            argv.append("-d")
        return argv

    def sub(
        self,
        topic: str,
        count: int,
        timeout: float = 5.0,
        *,
        username: str | None = None,
        password: str | None = None,
        qos: int = 0,
        retained_only: bool = False,
    ) -> list[Message]:
        """Subscribe now, wait for `count` messages or `timeout`, return what arrived."""
        argv = self._sub_argv(
            topic, count, timeout, username=username, password=password, qos=qos, client_id=None,
            retained_only=retained_only, debug=False,
        )
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
        return parse_sub_lines(proc.stdout)

    def subscribe(
        self,
        topic: str,
        count: int,
        timeout: float = 10.0,
        *,
        username: str | None = None,
        password: str | None = None,
        qos: int = 0,
        client_id: str | None = None,
    ) -> Subscription:
        """Start mosquitto_sub in the background; returns once it is subscribed.

        With `client_id`, the session is persistent (`-c`) so that, on a broker with
        `persistence=True`, messages published while mosquitto_sub reconnects after a broker
        restart are kept for it (use qos=1).
        """
        argv = self._sub_argv(
            topic, count, timeout, username=username, password=password, qos=qos, client_id=client_id,
            retained_only=False, debug=True,
        )
        subscription = Subscription(argv, timeout)
        self.started.append(subscription)
        return subscription


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    brokers: list[Mosquitto] = []

    def make(*, start: bool = True, **kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto{len(brokers)}", **kwargs)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        for subscription in broker.client.started:
            subscription.stop()
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory()


@pytest.fixture
def mosquitto_sub_at() -> Iterator[Callable[..., MosquittoSub]]:
    """`mosquitto_sub_at(port, users=None)`: mosquitto_sub against any loopback broker."""
    made: list[MosquittoSub] = []

    def make(port: int, users: dict[str, str] | None = None) -> MosquittoSub:
        client = MosquittoSub(port, users)
        made.append(client)
        return client

    yield make
    for client in made:
        for subscription in client.started:
            subscription.stop()
