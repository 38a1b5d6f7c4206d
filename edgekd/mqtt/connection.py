"""Build a paho client from MqttSettings, and say clearly why a connection failed.

Shared by the publisher and the listener so that TLS, credentials and reconnect backoff are set
up in one place. Uses the paho-mqtt 2.x callback API (CallbackAPIVersion.VERSION2).

MQTT version (`protocol` in MqttSettings): "5", "3.1.1", or "auto", which connects with MQTT 5 and,
when the broker answers "unsupported protocol version" (an MQTT 3.1.1-only broker such as the
embedded amqtt one), switches the client to 3.1.1 for that and every later attempt; the owner's
on_connect never sees that refusal. A persistent session is clean_session False in 3.1.1, and
clean_start False with a Session Expiry Interval (PERSISTENT_SESSION_EXPIRY_S) in 5.

Over MQTT 5, every edgekd payload carries properties a consumer can rely on without parsing it
(`EdgekdClient.publish` adds them to results, stats and status unless the caller passes its own):

    results, stats  Payload Format Indicator 1 (UTF-8), Content Type application/json,
                    user properties schema=urn:edgekd:schema:v<N>:<name> and schema_version=<N>;
                    results also Message Expiry Interval = `result_expiry` seconds when set
    status          Payload Format Indicator 1, Content Type text/plain (also on the last will)
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgekd.mqtt.schema import schema_id
from edgekd.mqtt.settings import MqttCredentialsError, MqttSettings
from edgekd.mqtt.topics import TopicError, Topics
from edgekd.mqtt.url import BrokerUrl, BrokerUrlError
from edgekd.payloads import SCHEMA_VERSION

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
    "Unsupported protocol version": "the broker does not speak this MQTT version; set protocol = \"auto\" "
    "(or \"3.1.1\") in [mqtt], or upgrade the broker",
    "Server unavailable": "the broker says it is unavailable; check the broker's own log",
    "Banned": "the broker has banned this client; ask the broker's administrator",
}


def refusal_message(url: BrokerUrl, reason: Any, username: str | None = None) -> str:
    """A one-line explanation of a refused CONNACK, naming the broker, the user and what to fix."""
    name = str(reason)
    fix = _REFUSALS.get(name, "check the broker's log for why it refused the connection")
    who = f"user {username!r}" if username else "an anonymous client (no username set)"
    return f"MQTT broker {url} refused the connection of {who} ({name}): {fix}"


# What OpenSSL says when the other end answers a ClientHello with something that is not TLS.
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST",
                    "UNKNOWN_PROTOCOL", "UNEXPECTED_EOF_WHILE_READING", "UNEXPECTED_MESSAGE"}


def wrong_port_hint(url: BrokerUrl) -> str:
    """The likely cause when a server accepts the TCP connection but does not answer as the broker
    the URL describes: TLS against a plain listener, plain MQTT against a TLS one, or no MQTT at all."""
    other = BrokerUrl(url.host, url.port, tls=not url.tls)
    if url.tls:
        return (
            f"the server at port {url.port} does not speak TLS: if it is a plain MQTT listener use {other}; "
            "if not, it is not an MQTT broker: check the port (MQTT over TLS is usually 8883, plain MQTT 1883)"
        )
    return (
        f"the server at port {url.port} did not answer as an MQTT broker: if it is a TLS listener use {other}; "
        "if not, it is another service: check the port (plain MQTT is usually 1883, MQTT over TLS 8883)"
    )


def unreachable_message(url: BrokerUrl, error: BaseException | None) -> str:
    """A one-line explanation of a failed TCP/TLS connection, naming the broker and the likely cause."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"MQTT broker {url}: its TLS certificate was not accepted ({error.verify_message}); "
            "set ca_file to the CA that signed it (tls_insecure only for testing)"
        )
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        if reason in _NOT_TLS_REASONS or isinstance(error, ssl.SSLEOFError):
            return f"MQTT broker {url}: TLS handshake failed ({reason}); {wrong_port_hint(url)}"
        return f"MQTT broker {url}: TLS handshake failed ({reason}); check ca_file, cert_file, key_file"
    detail = f" ({error.strerror or error})" if isinstance(error, OSError) else ""
    if url.tls and isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return f"MQTT broker {url}: the connection was reset during the TLS handshake{detail}; {wrong_port_hint(url)}"
    return f"cannot reach MQTT broker {url}{detail}; is it running and is the URL right?"


UNSUPPORTED_PROTOCOL = 0x84  # CONNACK "Unsupported protocol version" (paho maps 3.1.1's 0x01 to it)
PERSISTENT_SESSION_EXPIRY_S = 7 * 24 * 3600  # MQTT 5: how long the broker keeps a persistent session
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain"


def _status_properties(packet_type: int) -> Properties:
    props = Properties(packet_type)
    props.PayloadFormatIndicator = 1
    props.ContentType = TEXT_CONTENT_TYPE
    return props


class _PackedProperties(Properties):
    """Properties that are not changed after they are built, packed once for every message that carries them."""

    _packed: bytes

    @classmethod
    def of(cls, props: Properties) -> _PackedProperties:
        packed = cls.__new__(cls)
        packed.__dict__.update(props.__dict__)
        object.__setattr__(packed, "_packed", props.pack())
        return packed

    def pack(self) -> bytes:
        return self._packed


def _session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = PERSISTENT_SESSION_EXPIRY_S
    return props


def closed_before_connack_message(url: BrokerUrl, settings: MqttSettings, reason: Any) -> str:
    """The broker closed the connection before accepting it (no CONNACK)."""
    if url.tls and settings.cert_file:
        hint = (
            f"the broker may not accept the client certificate cert_file {str(settings.cert_file)!r}: check that "
            "the broker's CA signed it and that it has not expired"
        )
    elif url.tls:
        hint = "the broker may require a client certificate: set cert_file and key_file"
    else:
        hint = f"{wrong_port_hint(url)}; if it is an MQTT broker, its log says why it dropped the connection"
    return f"MQTT broker {url} closed the connection before accepting it ({reason}); {hint}"


CONNACK_TIMEOUT_S = 10.0  # under protocol "auto", how long an unanswered CONNECT may wait (at most the keepalive)


class EdgekdClient(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed.

    paho's loop swallows the exception of a failed (re)connect and only calls on_connect_fail
    without it; `last_connect_error` keeps it so that the message can say what went wrong.
    """

    last_connect_error: BaseException | None = None
    # "auto": fall back from 5 to 3.1.1 on "unsupported protocol version", or when the broker does
    # not answer an MQTT 5 CONNECT at all (see _check_keepalive)
    auto_protocol: bool = False
    _answered = False  # a CONNACK came for the current connection attempt
    _v5_proven = False  # the broker accepted MQTT 5 once: never fall back from it
    persistent: bool = False
    topics: Topics | None = None  # this device's topics, to know which properties a message gets
    result_expiry: int | None = None
    _owner_on_connect: Any = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        self._answered = False
        try:
            rc = super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise
        self.last_connect_error = None
        return rc

    @property
    def answered(self) -> bool:
        """A CONNACK came for the current connection attempt (a refusal counts: the broker spoke MQTT)."""
        return self._answered

    @property
    def mqtt5(self) -> bool:
        """True while this client speaks MQTT 5 (after an "auto" fallback, False)."""
        return self.protocol == mqtt.MQTTv5

    def connect_async(self, host: str, port: int = 1883, keepalive: int = 60, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.mqtt5 and self.persistent and not args and not kwargs:
            # With "auto" the first CONNECT carries no properties: a 3.1.1-only broker that reads
            # the whole packet before the version (amqtt) misparses them and never answers.
            kwargs = {"clean_start": False, "properties": None if self.auto_protocol else _session_properties()}
        super().connect_async(host, port, keepalive, *args, **kwargs)

    # paho reads self.on_connect when a CONNACK arrives: hand it a wrapper that sees the
    # fallback first, so that the owner's callback gets only real answers.
    @property  # type: ignore[override]
    def on_connect(self) -> Any:
        return self._connack if self._owner_on_connect is not None else None

    @on_connect.setter
    def on_connect(self, func: Any) -> None:
        self._owner_on_connect = func

    @property
    def _auto_attempt_unanswered(self) -> bool:
        """Under "auto", before MQTT 5 is proven: this attempt's CONNECT is out and no CONNACK came."""
        return (
            self.auto_protocol
            and not self._v5_proven
            and not self._answered
            and self._state == _ConnectionState.MQTT_CS_CONNECTING
        )

    def _check_keepalive(self) -> None:
        # paho waits for a CONNACK as long as the keepalive and then reconnects with the same
        # protocol, forever. Under "auto", a broker that reads an MQTT 5 CONNECT as 3.1.1 (amqtt
        # does with a will) never answers: give up on the attempt after CONNACK_TIMEOUT_S.
        if self._sock is not None and self._auto_attempt_unanswered:
            waited = mqtt.time_func() - self._last_msg_out
            if waited >= min(CONNACK_TIMEOUT_S, self._keepalive or CONNACK_TIMEOUT_S):
                self._sock_close()
                self._do_on_disconnect(packet_from_broker=False, v1_rc=mqtt.MQTTErrorCode.MQTT_ERR_KEEPALIVE)
                return
        super()._check_keepalive()

    def _do_on_disconnect(
        self, packet_from_broker: bool, v1_rc: mqtt.MQTTErrorCode, reason: Any = None, properties: Any = None
    ) -> None:
        if self._auto_attempt_unanswered:
            # No answer to a CONNECT: try the other version next. A broker that misreads MQTT 5
            # then gets 3.1.1; a failure that has nothing to do with the version (a refused TLS
            # client certificate closes the same way) alternates until the cause is fixed.
            if self.mqtt5:
                self._protocol = mqtt.MQTTv311
                self._clean_session = not self.persistent
                log.warning("MQTT broker did not answer an MQTT 5 CONNECT; trying MQTT 3.1.1 (protocol = \"auto\")")
            else:
                self._protocol = mqtt.MQTTv5
                log.info("MQTT broker did not answer an MQTT 3.1.1 CONNECT either; trying MQTT 5 again")
        super()._do_on_disconnect(packet_from_broker, v1_rc, reason, properties)

    def _connack(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._answered = True
        if self.mqtt5 and not reason_code.is_failure:
            self._v5_proven = True
        if (
            self.auto_protocol
            and self.mqtt5
            and getattr(reason_code, "is_failure", False)
            and getattr(reason_code, "value", None) == UNSUPPORTED_PROTOCOL
        ):
            # The move paho itself makes from 3.1.1 to 3.1: the next (re)connect speaks 3.1.1.
            self._protocol = mqtt.MQTTv311
            self._clean_session = not self.persistent
            log.info("MQTT broker does not speak MQTT 5; using MQTT 3.1.1 (protocol = \"auto\")")
            return
        if self.auto_protocol and self.mqtt5 and not reason_code.is_failure:
            # The broker speaks 5: from the next CONNECT on, the properties held back for "auto".
            if self.persistent and self._connect_properties is None:
                self._connect_properties = _session_properties()
            if self._will and self._will_topic.decode() == getattr(self.topics, "status", None):
                self._will_properties = _status_properties(PacketTypes.WILLMESSAGE)
        self._owner_on_connect(client, userdata, flags, reason_code, properties)

    def message_properties(self, topic: str) -> Properties | None:
        """The MQTT 5 properties of an edgekd message on `topic`; None for other topics or 3.1.1.

        Built and packed once per topic (paho packs a message's properties at every send, and these
        never change while the topics and result_expiry stay the same)."""
        if not self.mqtt5 or self.topics is None:
            return None
        key = (topic, id(self.topics), self.result_expiry)
        cache = self.__dict__.setdefault("_properties_cache", {})
        if key not in cache:
            props = self._build_message_properties(topic)
            cache[key] = None if props is None else _PackedProperties.of(props)
        return cache[key]

    def _build_message_properties(self, topic: str) -> Properties | None:
        t = self.topics
        assert t is not None
        props = Properties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        if topic == t.status:
            return _status_properties(PacketTypes.PUBLISH)
        device_level = f"{t.prefix}/{t.device}/"
        if not topic.startswith(device_level) or "/" in topic[len(device_level) :]:
            return None
        kind = "stats" if topic == t.stats else "result"
        props.ContentType = JSON_CONTENT_TYPE
        props.UserProperty = [("schema", schema_id(kind)), ("schema_version", str(SCHEMA_VERSION))]
        if kind == "result" and self.result_expiry:
            props.MessageExpiryInterval = int(self.result_expiry)
        return props

    def publish(  # type: ignore[override]
        self,
        topic: str,
        payload: Any = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        if properties is None:
            properties = self.message_properties(topic)
        return super().publish(topic, payload, qos, retain, properties)

    def will_set(  # type: ignore[override]
        self,
        topic: str,
        payload: Any = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        # Not with "auto" before the broker has shown it speaks 5 (see connect_async).
        status = self.topics is not None and topic == self.topics.status
        if properties is None and self.mqtt5 and status and not self.auto_protocol:
            properties = _status_properties(PacketTypes.WILLMESSAGE)
        super().will_set(topic, payload, qos, retain, properties)


def check_tls_files(settings: MqttSettings) -> None:
    """Load ca_file, cert_file and key_file as TLS will; raise MqttCredentialsError naming the file
    that is not what it should be (a PEM certificate bundle, a certificate and its key)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except (ssl.SSLError, OSError, UnicodeError) as exc:
            raise MqttCredentialsError(
                f"ca_file {str(settings.ca_file)!r} is not a usable CA bundle ({_ssl_reason(exc)}); set ca_file to "
                "the PEM file of the CA that signed the broker's certificate"
            ) from None
    if settings.cert_file is not None:
        key = str(settings.key_file) if settings.key_file else None
        try:
            # password "": an encrypted key fails here instead of OpenSSL prompting on a terminal
            context.load_cert_chain(str(settings.cert_file), key, password="")
        except (ssl.SSLError, OSError, UnicodeError) as exc:
            files = f"cert_file {str(settings.cert_file)!r}" + (f" with key_file {key!r}" if key else "")
            raise MqttCredentialsError(
                f"{files} cannot be used ({_ssl_reason(exc)}); the certificate and its key must be PEM, the key "
                "unencrypted and matching the certificate (in cert_file itself when key_file is not set)"
            ) from None


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__


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
    v5 = settings.protocol in ("5", "auto")
    client = EdgekdClient(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id if client_id is None else client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,  # MQTT 5: clean_start, in connect_async
    )
    client.auto_protocol = settings.protocol == "auto"
    client.persistent = persistent
    client.result_expiry = settings.result_expiry
    try:
        client.topics = Topics(settings.prefix, settings.device_id)
    except TopicError:
        client.topics = None
    password = settings.password_value()
    if settings.username:
        client.username_pw_set(settings.username, password)
    if url.tls:
        check_tls_files(settings)
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
