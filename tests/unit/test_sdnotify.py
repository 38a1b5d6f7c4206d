import os
import socket

import pytest

from edgekd.sdnotify import SystemdNotifier


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def recv(sock):
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping_arrive_on_the_socket(notify_socket):
    path, sock = notify_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_interval == 1.0
    assert n.ready("serving 1 model")
    assert recv(sock) == ["READY=1", "STATUS=serving 1 model"]
    assert n.watchdog()
    assert recv(sock) == ["WATCHDOG=1"]
    assert not n.watchdog()  # rate limited to half the watchdog period
    n.status("p99 3.1 ms\nline two")
    assert recv(sock) == ["STATUS=p99 3.1 ms line two"]
    n.stopping()
    assert recv(sock) == ["STOPPING=1"]


def test_without_systemd_everything_is_a_no_op():
    n = SystemdNotifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()


def test_watchdog_for_another_pid_is_ignored(notify_socket):
    path, _ = notify_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None


def test_a_dead_socket_is_reported_once_and_never_raises(tmp_path, caplog):
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.ready()
    assert not n.status("x")
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1
