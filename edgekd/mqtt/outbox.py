"""Where results wait for the broker: a durable SQLite outbox, or a memory queue.

Every result is put here before it is handed to MQTT and removed only when the broker
acknowledged it (QoS 1/2) or paho wrote it (QoS 0). Entries have increasing integer keys; the
publisher hands them over in key order, so the order survives outages and restarts.

SqliteOutbox (the default, `mqtt.outbox = "disk"`)
    One table in a SQLite file in WAL mode. `put` commits before it returns, so a result that
    `put` returned for survives a daemon crash or `kill -9` (the row is in the OS's page cache).
    `sync()` makes what was put durable against power loss (a WAL checkpoint, which fsyncs); the
    publisher calls it before handing entries to paho, so nothing reaches the broker that a power
    cut could make the device forget. A lock file keeps a second daemon off the same outbox.
MemoryOutbox (`mqtt.outbox = "memory"`)
    The same in a dict: lost on exit, nothing written to disk.

The bounds (a documented policy, the same for both):
- size: at most `max_items` entries. When full, the oldest entry not yet handed to paho is
  deleted to make room (counted in `dropped_full`); if every entry is in flight, the new one is
  refused (counted the same way).
- age: an entry older than `max_age_s` that is not in flight is deleted (counted in `expired`)
  when the outbox opens and every EXPIRE_EVERY_S after that.

Run ids: `run_id()` gives a number that is larger than any this outbox gave before (the Unix time
in seconds, or the last one + 1 when the clock has not moved on), so result ids
(`device/model-hash/RUN-SEQ`) stay unique across restarts although seq starts again from 0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
    expired: int

    def put(self, topic: str, payload: bytes, qos: int, created: float | None = None) -> bool: ...
    def after(self, key: int, limit: int, protect: bool = False) -> list[Entry]: ...
    def remove(self, keys: Iterable[int]) -> None: ...
    def expire(self, now: float | None = None) -> int: ...
    def protect(self, key: int) -> None: ...
    def sync(self) -> None: ...
    def run_id(self) -> str: ...
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

    def run_id(self) -> str:
        with self._lock:
            self._last_run = max(int(time.time()), self._last_run + 1)
            return str(self._last_run)

    def close(self) -> None:
        pass


class SqliteOutbox(_Bounds):
    durable = True

    def __init__(
        self, path: str | Path, max_items: int = DEFAULT_MAX_ITEMS_DISK, max_age_s: float = DEFAULT_MAX_AGE_S
    ) -> None:
        super().__init__(max_items, max_age_s)
        self.path = Path(path)
        self.description = f"disk {self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise OutboxError(
                f"outbox {self.path}: cannot create its directory ({exc.strerror}); set mqtt.outbox_path to a "
                "writable place, or mqtt.outbox = \"memory\" to keep results in memory only"
            ) from None
        self._lockfile = self._take_lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # commit survives a crash; sync() for power loss
            # Checkpoints (which fsync) only from sync() on its own connection, never inside put().
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (key INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            self._release_lock()
            raise OutboxError(
                f"outbox {self.path}: not a usable SQLite database ({exc}); move it aside (results in it are lost) "
                "or set mqtt.outbox_path to another file"
            ) from None
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass
        # sync() checkpoints on a connection of its own, so that puts do not wait for its fsync.
        self._sync_db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
        self._sync_lock = threading.Lock()
        self._dirty = False
        if self._count:
            log.info("outbox %s: %d results from an earlier run wait for the broker; they go out first", self.path, self._count)
        self.expire()

    def _take_lock(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fh = open(lock_path, "a+")
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot open {lock_path} ({exc.strerror}); check permissions") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutboxError(
                f"outbox {self.path} is in use by {holder}; each edgekd serve needs its own outbox: give it "
                "another device_id or set mqtt.outbox_path"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"edgekd pid {os.getpid()}\n")
        fh.flush()
        return fh

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
            self._lockfile.close()
            self._lockfile = None

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def put(self, topic: str, payload: bytes, qos: int, created: float | None = None) -> bool:
        created = time.time() if created is None else created
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._count >= self.max_items:
                    self.dropped_full += 1
                    row = db.execute(
                        "SELECT key FROM outbox WHERE key > ? ORDER BY key LIMIT 1", (self._protected,)
                    ).fetchone()
                    if row is None:
                        db.execute("ROLLBACK")
                        return False
                    db.execute("DELETE FROM outbox WHERE key = ?", (row[0],))
                    self._count -= 1
                db.execute(
                    "INSERT INTO outbox (topic, payload, qos, created) VALUES (?, ?, ?, ?)",
                    (topic, sqlite3.Binary(payload), qos, created),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count += 1
            self._dirty = True
            return True

    def after(self, key: int, limit: int, protect: bool = False) -> list[Entry]:
        """As MemoryOutbox.after."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, topic, payload, qos, created FROM outbox WHERE key > ? ORDER BY key LIMIT ?", (key, limit)
            ).fetchall()
            if protect and rows:
                self._protected = int(rows[-1][0])
        return [Entry(int(k), t, bytes(p), int(q), float(c)) for k, t, p, q, c in rows]

    def remove(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        if not keys:
            return
        with self._lock:
            cur = self._db.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in keys])
            self._count -= max(0, cur.rowcount)

    def expire(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE created < ? AND key > ?", (cutoff, self._protected))
            n = max(0, cur.rowcount)
            self._count -= n
            self.expired += n
        if n:
            log.warning("outbox %s: %d results older than %.0f s expired unsent", self.path, n, self.max_age_s)
        return n

    def sync(self) -> None:
        """Make every put so far durable against power loss (fsync through a WAL checkpoint)."""
        with self._sync_lock:
            with self._lock:
                if not self._dirty:
                    return
                self._dirty = False
            self._sync_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def run_id(self) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'last_run'").fetchone()
            run = max(int(time.time()), (int(row[0]) + 1) if row else 0)
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('last_run', ?)", (run,))
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return str(run)

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                with self._sync_lock:
                    self._sync_db.close()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                self._db.close()
                self._db = None  # type: ignore[assignment]
                self._release_lock()
