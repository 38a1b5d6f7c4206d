"""The broker URL, parsed in exactly one place.

Accepted forms (the port defaults to 1883, or 8883 for TLS):

    mqtt://HOST[:PORT]      plain MQTT
    mqtts://HOST[:PORT]     MQTT over TLS, certificate verification on
    HOST[:PORT]             same as mqtt://
    [IPv6]:PORT, mqtt://[IPv6]:PORT
    embedded[:PORT]         start the in-process broker on 127.0.0.1 (port 0 or none: a free one)

Credentials are never part of the URL: a `user:pass@` part is refused, because URLs end up in
argv, shell history and logs. Username and password come from the config file or environment.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MQTT_PORT = 1883
MQTTS_PORT = 8883
EMBEDDED = "embedded"
EMBEDDED_HOST = "127.0.0.1"

_FORMS = "mqtt://HOST[:PORT], mqtts://HOST[:PORT], HOST[:PORT], [IPv6]:PORT or embedded[:PORT]"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_SCHEMES = {"mqtt": False, "mqtts": True}


class BrokerUrlError(ValueError):
    """A broker URL that does not parse. The message names the URL and the expected form."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    embedded: bool = False

    def __str__(self) -> str:
        if self.embedded:
            return EMBEDDED if self.port == 0 else f"{EMBEDDED}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


_SCHEME_PREFIX_RE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")


def redact_url(text: str) -> str:
    """`text` as it may appear in a message: everything between the scheme and the last '@' is
    replaced by `***`. A password may hold '/', '@', ':' or '#', so the credentials are taken to
    end at the last '@' (a host name never holds one); anything with no '@' is left as it is."""
    at = text.rfind("@")
    if at < 0:
        return text
    scheme = _SCHEME_PREFIX_RE.match(text)
    start = scheme.end() if scheme and scheme.end() <= at else 0
    return text[:start] + "***" + text[at:]


def _fail(text: str, problem: str) -> BrokerUrlError:
    return BrokerUrlError(f"broker URL {redact_url(text)!r}: {problem} (expected {_FORMS})")


def _port(text: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise _fail(text, f"port {raw!r} is not a number")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise _fail(text, f"port {port} is outside 1..65535")
    return port


def _host(text: str, raw: str) -> str:
    if not raw:
        raise _fail(text, "the host is missing")
    try:
        ipaddress.IPv4Address(raw)
        return raw
    except ValueError:
        pass
    if len(raw) > 253 or not all(_LABEL_RE.match(label) for label in raw.removesuffix(".").split(".")):
        raise _fail(text, f"{raw!r} is not a valid host name or IP address")
    if raw.replace(".", "").isdigit():
        raise _fail(text, f"{raw!r} is not a valid IPv4 address")
    return raw


def _authority(text: str, authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _fail(text, "an IPv6 address opened with '[' is not closed with ']'")
        inner, rest = authority[1:end], authority[end + 1 :]
        try:
            host = str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise _fail(text, f"{inner!r} is not an IPv6 address") from None
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise _fail(text, f"unexpected {rest!r} after the IPv6 address")
        return host, _port(text, rest[1:])
    if authority.count(":") > 1:
        raise _fail(text, "an IPv6 address must be written in brackets, e.g. [::1]:1883")
    host, sep, port = authority.partition(":")
    return _host(text, host), (_port(text, port) if sep else default_port)


def parse_broker_url(text: str) -> BrokerUrl:
    """Parse a broker URL; raise BrokerUrlError naming the URL and the expected form."""
    if not isinstance(text, str):
        raise BrokerUrlError(f"broker URL must be a string, got {type(text).__name__} (expected {_FORMS})")
    raw = text.strip()
    if not raw:
        raise _fail(text, "it is empty")
    if "@" in raw:  # before anything else, so that no message quotes a piece of a password
        raise _fail(
            text,
            "credentials do not belong in the URL; set the MQTT username and password "
            "(or password_file) in the config file or the environment",
        )
    if any(ord(c) < 32 or ord(c) == 127 or c.isspace() for c in raw):
        raise _fail(text, "it contains spaces or control characters")
    if raw.lower() == EMBEDDED or raw.lower().startswith(EMBEDDED + ":"):
        port = 0 if raw.lower() == EMBEDDED else _port(text, raw[len(EMBEDDED) + 1 :])
        return BrokerUrl(host=EMBEDDED_HOST, port=port, embedded=True)
    match = _SCHEME_RE.match(raw)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme not in _SCHEMES:
            raise _fail(text, f"scheme {scheme!r}:// is not supported (use mqtt:// or mqtts://)")
        tls = _SCHEMES[scheme]
    else:
        if "://" in raw:
            raise _fail(text, "the scheme is not valid")
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", raw):
            raise _fail(text, "a scheme must be followed by '://'")
        rest, tls = raw, False
    rest = rest.removesuffix("/")
    for bad in ("/", "?", "#"):
        if bad in rest:
            raise _fail(text, f"a path, query or fragment ({bad!r}) is not allowed")
    host, port = _authority(text, rest, MQTTS_PORT if tls else MQTT_PORT)
    return BrokerUrl(host=host, port=port, tls=tls)
