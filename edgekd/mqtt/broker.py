"""An MQTT broker inside the edgekd process, for `--broker embedded` and the demo.

amqtt runs in a background thread with its own asyncio loop, listening on loopback only and
allowing anonymous clients (nothing off the machine can reach it). Retained messages and last
wills work as in any MQTT 3.1.1 broker, so the publisher, `edgekd listen` and `mosquitto_sub`
all talk to it unchanged. It keeps nothing on disk: retained messages go when it stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import socket
import threading
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


# amqtt and its state machine library log every connection at INFO; a daemon's log wants none of it.
_CHATTY_LOGGERS = ("amqtt", "transitions")


class _SnapshotKeys(dict):  # type: ignore[type-arg]
    """amqtt 0.12's broker iterates `_subscriptions` across awaits when a client connects, so a
    subscription added or removed meanwhile (another client connecting or going) kills that
    connection with "dictionary changed size during iteration". Iterating over a snapshot of the
    keys avoids it without changing what is iterated."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(dict.keys(self)))


def _make_broker(base: type) -> type:
    """amqtt's Broker with retained messages sent only for the client's own subscriptions.

    amqtt 0.12 sends a connecting client the retained messages matching every filter any client
    holds (it loops over the broker-wide subscriptions), so a listener got each retained status
    once per other subscriber. Here a retained message goes to a session only for a filter that
    session itself subscribed to, as MQTT specifies.
    """

    class _Broker(base):  # type: ignore[misc, valid-type]
        async def _publish_retained_messages_for_subscription(self, subscription: Any, session: Any) -> None:
            holders = self._subscriptions.get(subscription[0], [])
            if any(s.client_id == session.client_id for s, _ in holders):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return _Broker


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start (e.g. its port is taken). The message says what to do."""


class EmbeddedBroker:
    """amqtt on `host:port` (port 0: a free port, known after start()) in a daemon thread."""

    protocol = "3.1.1"  # amqtt 0.12 speaks MQTT 3.1.1 only (clients set this instead of "auto")

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the embedded broker listens on loopback only, not {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is outside 0..65535")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the embedded broker is not started; call start() first")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._port is not None

    def start(self) -> EmbeddedBroker:
        """Start listening; returns when the broker accepts connections."""
        if self.running:
            return self
        for name in _CHATTY_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
        if self._requested_port:
            self._check_port_free()
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, started), name="edgekd-mqtt-broker", daemon=True)
        self._thread.start()
        try:
            self._port = started.result(timeout=START_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise EmbeddedBrokerError(f"the embedded MQTT broker did not start within {START_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            self._join()
            raise EmbeddedBrokerError(
                f"the embedded MQTT broker cannot listen on {self.host}:{self._requested_port} ({exc.strerror or exc}); "
                "choose another port (embedded:PORT) or use 'embedded' for a free one"
            ) from None
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    def _check_port_free(self) -> None:
        """Fail with a clear message (not amqtt's traceback) when the asked-for port is taken."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self._requested_port))
            except OSError as exc:
                raise EmbeddedBrokerError(
                    f"the embedded MQTT broker cannot listen on {self.host}:{self._requested_port} "
                    f"({exc.strerror or exc}); choose another port (embedded:PORT) or use 'embedded' for a free one"
                ) from None

    def stop(self) -> None:
        """Disconnect every client (their last wills fire) and stop listening."""
        loop, broker = self._loop, self._broker
        if loop is not None and broker is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                future.result(timeout=STOP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - report and go on stopping the loop
                log.warning("embedded MQTT broker did not shut down cleanly: %s", exc)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._join()
        self._port = None

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("embedded MQTT broker thread did not end within %.0f s", STOP_TIMEOUT_S)
        self._thread = None
        self._loop = None
        self._broker = None

    def _run(self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[int]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_broker(loop, started))
        except BaseException as exc:  # noqa: BLE001 - handed to start() through the future
            if not started.done():
                started.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _start_broker(self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[int]) -> None:
        from amqtt.broker import Broker
        from amqtt.errors import BrokerError

        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{bind_host}:{self._requested_port}"}},
            # Only anonymous authentication: no event/packet logger or $SYS plugins.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = _make_broker(Broker)(config, loop=loop)
        broker._subscriptions = _SnapshotKeys()
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            raise (cause if isinstance(cause, OSError) else exc) from None
        self._broker = broker
        try:
            server = broker._servers["default"].instance  # amqtt 0.12 keeps the asyncio.Server here
            port = int(server.sockets[0].getsockname()[1])
        except (AttributeError, KeyError, IndexError):
            raise EmbeddedBrokerError(
                "this amqtt version is not supported by the embedded broker; install amqtt 0.12 "
                "(pip install 'amqtt>=0.12,<0.13')"
            ) from None
        started.set_result(port)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
