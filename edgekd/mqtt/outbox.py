"""Where results wait for the broker: a durable SQLite outbox, or a memory queue.

Every result is put here before it is handed to MQTT and removed only when the broker
acknowledged it (QoS 1/2) or paho wrote it (QoS 0). Entries have increasing integer keys; the
publisher hands them over in key order, so the order survives outages and restarts.

SqliteOutbox (the default, `mqtt.outbox = "disk"`; in edgekd.mqtt.outbox_disk, importable from here)
    One table in a SQLite file in WAL mode. `put` commits before it returns, so a result that
    `put` returned for survives a daemon crash or `kill -9` (the row is in the OS's page cache).
    `sync()` makes what was put durable against power loss (an fsync of the WAL, now and then a
    checkpoint, which fsyncs too); the publisher calls it before handing entries to paho, so
    nothing reaches the broker that a power cut could make the device forget. A lock file keeps a second daemon off the same outbox.
MemoryOutbox (`mqtt.outbox = "memory"`)
    The same in a dict: lost on exit, nothing written to disk.

The bounds (a documented policy, the same for both):
- size: at most `max_items` entries. When full, the oldest entry not yet handed to paho is
  deleted to make room (counted in `dropped_full`); if every entry is in flight, the new one is
  refused (counted the same way).
- age: an entry older than `max_age_s` that is not in flight is deleted (counted in `expired`)
  when the outbox opens and every EXPIRE_EVERY_S after that.

When the disk fails (full, read-only, I/O errors; at start or later), SqliteOutbox never raises
from `put`: it holds the newest entries in memory within a bound until the disk takes writes
again (edgekd.mqtt.outbox_disk). A file that is not an outbox (not SQLite, corrupt, or another
program's database) is refused with an OutboxError and left untouched.

Run ids: `run_id()` gives a number that is larger than any this outbox gave before (the Unix time
in seconds, or the last one + 1 when the clock has not moved on), so result ids
(edgekd.result_ids) stay unique across restarts although seq starts again from 0.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS_DISK = 100_000  # about 60 MB of results; 7 hours of 4 results/s
DEFAULT_MAX_ITEMS_MEMORY = 1000
DEFAULT_MAX_AGE_S = 7 * 24 * 3600.0
EXPIRE_EVERY_S = 60.0
APP_DIR = "edgekd"


class OutboxError(RuntimeError):
    """The outbox cannot be opened. The message names the file and what to do."""


@dataclass(frozen=True)
class Entry:
    key: int
    topic: str
    payload: bytes
    qos: int
    created: float  # Unix time when it was put


class Outbox(Protocol):
    durable: bool
    description: str
    dropped_full: int
    dropped_memory: int
    expired: int

    def put(self, topic: str, payload: bytes, qos: int, created: float | None = None) -> bool: ...
    def after(self, key: int, limit: int, protect: bool = False) -> list[Entry]: ...
    def remove(self, keys: Iterable[int]) -> None: ...
    def expire(self, now: float | None = None) -> int: ...
    def protect(self, key: int) -> None: ...
    def sync(self) -> None: ...
    def run_id(self) -> str: ...
    def flush_memory(self) -> int: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


def state_directory(environ: dict[str, str] | None = None) -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=, e.g. /var/lib/edgekd), else
    $XDG_STATE_HOME/edgekd, else ~/.local/state/edgekd."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / APP_DIR


def default_outbox_path(device_id: str, environ: dict[str, str] | None = None) -> Path:
    return state_directory(environ) / f"outbox-{device_id}.sqlite3"


class _Bounds:
    """The size and age policy shared by both outboxes. `_protected` is the highest key in flight."""

    def __init__(self, max_items: int, max_age_s: float) -> None:
        if max_items < 1:
            raise ValueError(f"outbox max_items must be at least 1, got {max_items}")
        if max_age_s <= 0:
            raise ValueError(f"outbox max_age_s must be positive, got {max_age_s}")
        self.max_items = int(max_items)
        self.max_age_s = float(max_age_s)
        self.dropped_full = 0
        self.dropped_memory = 0  # SqliteOutbox: dropped while the disk took no writes
        self.expired = 0
        self._protected = 0
        self._lock = threading.Lock()

    def protect(self, key: int) -> None:
        """Entries up to `key` were handed to paho: the bounds do not delete them."""
        with self._lock:
            self._protected = key


class MemoryOutbox(_Bounds):
    durable = False

    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS_MEMORY, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        super().__init__(max_items, max_age_s)
        self._entries: dict[int, Entry] = {}  # insertion order is key order
        self._next = 1
        self._last_run = 0
        self.description = "memory"

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, topic: str, payload: bytes, qos: int, created: float | None = None) -> bool:
        with self._lock:
            if len(self._entries) >= self.max_items:
                self.dropped_full += 1
                victim = next((k for k in self._entries if k > self._protected), None)
                if victim is None:
                    return False
                del self._entries[victim]
            key = self._next
            self._next += 1
            self._entries[key] = Entry(key, topic, payload, qos, time.time() if created is None else created)
            return True

    def after(self, key: int, limit: int, protect: bool = False) -> list[Entry]:
        """The oldest entries with keys above `key`; `protect`: they are about to be handed to paho,
        so the bounds must not delete them (set in the same step, so no put can drop one first)."""
        with self._lock:
            out = []
            for k, e in self._entries.items():
                if k > key:
                    out.append(e)
                    if len(out) >= limit:
                        break
            if protect and out:
                self._protected = out[-1].key
            return out

    def remove(self, keys: Iterable[int]) -> None:
        with self._lock:
            for k in keys:
                self._entries.pop(k, None)

    def expire(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock:
            old = [k for k, e in self._entries.items() if e.created < cutoff and k > self._protected]
            for k in old:
                del self._entries[k]
            self.expired += len(old)
            return len(old)

    def sync(self) -> None:
        pass

    def flush_memory(self) -> int:
        """Entries that exist only in memory (here: all of them)."""
        return len(self)

    def run_id(self) -> str:
        with self._lock:
            self._last_run = max(int(time.time()), self._last_run + 1)
            return str(self._last_run)

    def close(self) -> None:
        pass


def __getattr__(name: str) -> Any:
    # SqliteOutbox lives in its own module (it imports this one); `from edgekd.mqtt.outbox import
    # SqliteOutbox` keeps working
    if name == "SqliteOutbox":
        from edgekd.mqtt.outbox_disk import SqliteOutbox

        return SqliteOutbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
