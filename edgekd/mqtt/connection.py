"""Build a paho client from MqttSettings, and say clearly why a connection failed.

Shared by the publisher and the listener so that TLS, credentials and reconnect backoff are set
up in one place. Uses the paho-mqtt 2.x callback API (CallbackAPIVersion.VERSION2).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgekd.mqtt.settings import MqttSettings
from edgekd.mqtt.url import BrokerUrl, BrokerUrlError

log = logging.getLogger(__name__)


class BrokerRefusedError(ConnectionError):
    """The broker refused the connection (credentials, authorisation, client id).

    Retrying will not help until the configuration changes; the message says what to fix.
    """


class BrokerUnreachableError(ConnectionError):
    """No connection to the broker within the time asked for."""


_REFUSALS = {
    # MQTT 3.1.1 CONNACK return codes, and their MQTT 5 reason code names as paho spells them.
    "Bad user name or password": "the broker refused the username or password; check username and "
    "password (or password_file) in the config file or environment",
    "Not authorized": "the broker refused this client as not authorised; check username and "
    "password (or password_file) and the broker's ACL for this user",
    "Identifier rejected": "the broker rejected the client id; set a different client_id",
    "Client identifier not valid": "the broker rejected the client id; set a different client_id",
    "Unsupported protocol version": "the broker does not speak MQTT 3.1.1; upgrade the broker",
    "Server unavailable": "the broker says it is unavailable; check the broker's own log",
    "Banned": "the broker has banned this client; ask the broker's administrator",
}


def refusal_message(url: BrokerUrl, reason: Any, username: str | None = None) -> str:
    """A one-line explanation of a refused CONNACK, naming the broker, the user and what to fix."""
    name = str(reason)
    fix = _REFUSALS.get(name, "check the broker's log for why it refused the connection")
    who = f"user {username!r}" if username else "an anonymous client (no username set)"
    return f"MQTT broker {url} refused the connection of {who} ({name}): {fix}"


def unreachable_message(url: BrokerUrl, error: BaseException | None) -> str:
    """A one-line explanation of a failed TCP/TLS connection, naming the broker."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"MQTT broker {url}: its TLS certificate was not accepted ({error.verify_message}); "
            "set ca_file to the CA that signed it (tls_insecure only for testing)"
        )
    if isinstance(error, ssl.SSLError):
        return f"MQTT broker {url}: TLS handshake failed ({error.reason or error}); check ca_file, cert_file, key_file"
    detail = f" ({error.strerror or error})" if isinstance(error, OSError) else ""
    return f"cannot reach MQTT broker {url}{detail}; is it running and is the URL right?"


class EdgekdClient(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed.

    paho's loop swallows the exception of a failed (re)connect and only calls on_connect_fail
    without it; `last_connect_error` keeps it so that the message can say what went wrong.
    """

    last_connect_error: BaseException | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise
        self.last_connect_error = None
        return rc


def make_client(settings: MqttSettings, client_id: str | None = None, *, persistent: bool = False) -> EdgekdClient:
    """A configured, not yet connected client for `settings` (refuses an `embedded` URL).

    `persistent`: keep the session on the broker across reconnects (clean_session False), as the
    publisher does with its fixed client id so that QoS 1 results survive a broker restart.
    """
    url = settings.broker
    if url.embedded:
        # The process that starts the embedded broker connects to broker.url (settings.with_url);
        # any other process must be given that address.
        raise BrokerUrlError(
            f"broker URL {settings.url!r} names the in-process broker of `edgekd serve`; from another "
            "process connect to the address serve logs (mqtt://127.0.0.1:PORT; fix it with embedded:PORT)"
        )
    client = EdgekdClient(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id if client_id is None else client_id,
        protocol=mqtt.MQTTv311,
        clean_session=not persistent,
    )
    password = settings.password_value()
    if settings.username:
        client.username_pw_set(settings.username, password)
    if url.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            certfile=str(settings.cert_file) if settings.cert_file else None,
            keyfile=str(settings.key_file) if settings.key_file else None,
            cert_reqs=ssl.CERT_NONE if settings.tls_insecure else ssl.CERT_REQUIRED,
        )
        if settings.tls_insecure:
            log.warning("TLS certificate verification is OFF for %s (tls_insecure); use only for testing", url)
            client.tls_insecure_set(True)
    client.reconnect_delay_set(settings.reconnect_min, settings.reconnect_max)  # type: ignore[arg-type]
    return client
