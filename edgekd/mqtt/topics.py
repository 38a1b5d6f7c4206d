"""Topic names, built in one place from checked parts.

    <prefix>/<device>/<task>   results of the model whose task is <task>
    <prefix>/<device>/status   retained `online` / `offline`
    <prefix>/<device>/stats    health, every few seconds

A device id or task is one topic level: letters, digits, '_' and '-' only, so no '+', '#', '/',
NUL or empty part can reach a topic (no wildcard or level injection). The prefix may have several
levels (`site1/edgekd`), each made of letters, digits, '_', '-' and '.'. Explicit values that break
these rules are refused with an error; only the default device id (the host name) is sanitised,
by `sanitise_device_id`, which keeps the first label of a dotted host name and replaces every
other character with '-'.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from edgekd.mqtt.url import redact_url

STATUS = "status"
STATS = "stats"
RESERVED = (STATUS, STATS)
MAX_PART = 64

_PART_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX_LEVEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TopicError(ValueError):
    """A topic part that would break the topic layout. The message names it and the rule."""


def _quoted(value: object) -> str:
    """A rejected value as a message may quote it: a URL's credentials never (a URL in the wrong place)."""
    return repr(redact_url(value)) if isinstance(value, str) else repr(value)


def check_part(value: str, what: str) -> str:
    """Return `value` if it is a valid single topic level, else raise TopicError naming `what`."""
    if not isinstance(value, str) or not _PART_RE.match(value):
        raise TopicError(
            f"{what} {_quoted(value)} is not a valid MQTT topic level: use 1 to {MAX_PART} letters, digits, "
            "'_' or '-' (no '/', '+', '#', spaces or empty)"
        )
    return value


def check_prefix(value: str) -> str:
    """Return `value` if it is a valid topic prefix (one or more levels), else raise TopicError."""
    levels = value.split("/") if isinstance(value, str) else [""]
    if not all(_PREFIX_LEVEL_RE.match(level) for level in levels) or value.startswith("$"):
        raise TopicError(
            f"prefix {_quoted(value)} is not a valid MQTT topic prefix: use levels of letters, digits, "
            "'_', '-' or '.' separated by single '/' (no '+', '#', leading '$', empty levels or "
            "leading/trailing '/')"
        )
    return value


def sanitise_device_id(name: str) -> str:
    """A valid device id made from any name (e.g. a host name): the part before the first '.',
    other characters replaced with '-', at most 64 long; `edgekd` if nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name.split(".")[0] if name else "").strip("-")
    return cleaned[:MAX_PART].strip("-") or "edgekd"


def default_device_id() -> str:
    """The host name, sanitised to one topic level."""
    return sanitise_device_id(socket.gethostname())


@dataclass(frozen=True)
class Topics:
    """The topics of one device. Both parts are checked on construction."""

    prefix: str
    device: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_part(self.device, "device id")

    def result(self, task: str) -> str:
        check_part(task, "task")
        if task in RESERVED:
            raise TopicError(
                f"task {task!r} would collide with the device's {task} topic; "
                "export the model with another task name"
            )
        return f"{self.prefix}/{self.device}/{task}"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device}/{STATUS}"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/{self.device}/{STATS}"


def subscription(prefix: str) -> str:
    """The filter that matches results, status and stats of every device under `prefix`."""
    return f"{check_prefix(prefix)}/+/+"


@dataclass(frozen=True)
class ParsedTopic:
    device: str
    kind: str  # "status", "stats" or "result"
    task: str | None = None


def parse_topic(prefix: str, topic: str) -> ParsedTopic | None:
    """Split a received topic into device and kind; None if it is not an edgekd topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not all(_PART_RE.match(p) for p in parts):
        return None
    device, last = parts
    if last in RESERVED:
        return ParsedTopic(device=device, kind=last)
    return ParsedTopic(device=device, kind="result", task=last)
