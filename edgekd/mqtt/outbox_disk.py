"""The durable outbox: results in a SQLite file, and what happens when its disk fails.

The policy it shares with MemoryOutbox (bounds, keys, run ids) is in edgekd.mqtt.outbox. Here:

- the file: WAL mode, `put` commits before it returns, `sync()` fsyncs the WAL file (and every
  CHECKPOINT_EVERY_SYNCS syncs checkpoints it on a second connection instead, which fsyncs too, so
  the WAL is reused); a lock file keeps a second daemon off it;
- whose file it is: an edgekd outbox carries APPLICATION_ID in its SQLite header (or, written by an
  older edgekd, exactly our tables); any other SQLite file is refused untouched;
- a failing disk (full, read-only, I/O errors), at start or later: `put` never raises; up to
  `memory_items` of the newest results wait in memory (older ones dropped, counted in
  `dropped_memory`); the disk is tried again every DISK_RETRY_S and, when a write succeeds, they
  move onto it with their keys; both moments are logged with the path and the fix.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from edgekd.mqtt.outbox import DEFAULT_MAX_AGE_S, DEFAULT_MAX_ITEMS_DISK, Entry, OutboxError, _Bounds
from edgekd.mqtt.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

MEMORY_ITEMS_WHEN_DISK_FAILS = 10_000  # about 7 MB of results held while the disk takes no writes
DISK_RETRY_S = 5.0  # how often a failed disk is tried again
CHECKPOINT_EVERY_SYNCS = 64  # sync() fsyncs the WAL; every this many syncs it checkpoints instead
CHECKPOINT_WAL_BYTES = 4 << 20  # ... or when the WAL has grown beyond this
APPLICATION_ID = 0x65646B64  # "edkd" in the SQLite header: this file is an edgekd outbox
NEARLY_FULL_KB = 64  # less free space than this, and a write error is reported as a full disk
KEYS_WHILE_UNREADABLE = 1 << 40  # first key when an existing outbox cannot be opened (above any it holds)
_OWN_TABLES: dict[str, tuple[str, ...]] = {
    "outbox": ("key", "topic", "payload", "qos", "created"),
    "meta": ("name", "value"),
    "sqlite_sequence": (),
}


def _disk_reason(exc: BaseException, where: Path) -> str:
    """Why the disk did not take a write, for a message: full (with the space left), read-only, or the error."""
    name = getattr(exc, "sqlite_errorname", "")
    errno_ = getattr(exc, "errno", None)
    try:
        st = os.statvfs(where)
        free_kb: int | None = st.f_bavail * st.f_frsize // 1024
    except OSError:
        free_kb = None
    # SQLite reports a full disk as SQLITE_FULL, or as an I/O error when its shared-memory file cannot grow
    if name == "SQLITE_FULL" or errno_ == errno.ENOSPC or (free_kb is not None and free_kb < NEARLY_FULL_KB):
        return "the disk is full" + (f": {free_kb} kB free" if free_kb is not None else "")
    if name.startswith("SQLITE_READONLY") or errno_ == errno.EROFS or _read_only(where):
        return "the file system is read-only"
    return f"{name or type(exc).__name__}: {exc}"


DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT)


def _read_only(where: Path) -> bool:
    try:
        return bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _disk_trouble(exc: sqlite3.Error, where: Path) -> bool:
    """An error of the disk under a good database (full, read-only, I/O), not of the file itself."""
    name = getattr(exc, "sqlite_errorname", "")
    return name == "SQLITE_FULL" or name.startswith(("SQLITE_IOERR", "SQLITE_READONLY")) or _read_only(where)


class _DiskTrouble(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SqliteOutbox(_Bounds):
    """The durable outbox. When the disk cannot take a write (full, read-only, I/O errors) it keeps
    up to `memory_items` of the newest results in memory, drops older ones (counted in
    `dropped_memory`), retries the disk every DISK_RETRY_S and moves them back when it can."""

    durable = True

    def __init__(
        self,
        path: str | Path,
        max_items: int = DEFAULT_MAX_ITEMS_DISK,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        memory_items: int = MEMORY_ITEMS_WHEN_DISK_FAILS,
    ) -> None:
        super().__init__(max_items, max_age_s)
        self.path = Path(path)
        self.description = f"disk {self.path}"
        self.memory_items = max(1, min(int(memory_items), self.max_items))
        self._db: sqlite3.Connection | None = None
        self._sync_db: sqlite3.Connection | None = None
        self._sync_lock = threading.Lock()
        self._syncs_since_checkpoint = CHECKPOINT_EVERY_SYNCS
        self._wal_fd: int | None = None  # the WAL file, for sync()'s fsync; reopened when the file changes
        self._dirty = False
        self._disk_rows = 0  # rows in the file, including those in _gone
        self._memory: dict[int, Entry] = {}  # while the disk fails; insertion order is key order
        self._gone: set[int] = set()  # removed, but the DELETE failed: hidden until it succeeds
        self._next_key = 1
        self._last_run = 0
        self._trouble: str | None = None  # why the disk takes no writes now
        self._retry_at = 0.0
        self._warn = RateLimitedLog(log)
        self._lockfile = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise OutboxError(
                    f"outbox {self.path}: cannot create its directory ({exc.strerror}); set mqtt.outbox_path to a "
                    "writable place, or mqtt.outbox = \"memory\" to keep results in memory only"
                ) from None
            self._start_in_memory(_disk_reason(exc, self._existing_parent()))
            return
        try:
            self._lockfile = self._take_lock()
            self._open_db()
        except _DiskTrouble as exc:
            self._start_in_memory(exc.reason)
            return
        except OutboxError:
            self._release_lock()
            raise
        if self._disk_rows:
            log.info("outbox %s: %d results from an earlier run wait for the broker; they go out first", self.path, self._disk_rows)
        self.expire()

    # -- opening -------------------------------------------------------------------------------

    def _existing_parent(self) -> Path:
        p = self.path.parent
        while not p.exists() and p != p.parent:
            p = p.parent
        return p

    def _start_in_memory(self, reason: str) -> None:
        """The disk failed at start: an outbox with rows may be there that cannot be read now, so
        keys start far above any it holds (its rows go out at the next start, first)."""
        self._enter_trouble(reason)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._next_key = KEYS_WHILE_UNREADABLE
            log.warning(
                "outbox %s: results of an earlier run in it cannot be read now; they stay in the file and go out "
                "at the next start after the disk recovers", self.path,
            )

    def _take_lock(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fh = open(lock_path, "a+")
        except OSError as exc:
            if exc.errno in DISK_ERRNOS:
                raise _DiskTrouble(_disk_reason(exc, self.path.parent)) from None
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
        try:  # who holds it, for the message above; the lock works without it (a full disk)
            fh.seek(0)
            fh.truncate()
            fh.write(f"edgekd pid {os.getpid()}\n")
            fh.flush()
        except OSError:
            pass
        return fh

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
            try:
                self._lockfile.close()
            except OSError:
                pass
            self._lockfile = None

    def _open_db(self) -> None:
        """Open (or create) the file as an outbox. Raises OutboxError for a file that is not one,
        _DiskTrouble when the disk cannot take the writes that opening needs."""
        if self.path.is_dir():
            raise OutboxError(
                f"outbox {self.path} is a directory; set mqtt.outbox_path to a file in it, e.g. "
                f"{self.path / 'outbox.sqlite3'}"
            )
        db = None
        try:
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
            self._check_owner(db)  # before any write: another program's file is left untouched
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # commit survives a crash; sync() for power loss
            # Checkpoints (which fsync) only from sync() on its own connection, never inside put().
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (key INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            rows, top = db.execute("SELECT COUNT(*), COALESCE(MAX(key), 0) FROM outbox").fetchone()
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            db.execute("PRAGMA quick_check").fetchone()
            sync_db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if _disk_trouble(exc, self.path.parent):
                raise _DiskTrouble(_disk_reason(exc, self.path.parent)) from None
            raise OutboxError(
                f"outbox {self.path}: not a usable SQLite database ({exc}); move it aside (results in it are lost) "
                "or set mqtt.outbox_path to another file"
            ) from None
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass
        self._db, self._sync_db = db, sync_db  # sync() checkpoints on its own connection: puts do not wait for its fsync
        self._syncs_since_checkpoint = CHECKPOINT_EVERY_SYNCS  # the first sync on a (re)opened file checkpoints
        self._disk_rows = int(rows)
        self._next_key = max(self._next_key, int(top) + 1, (int(seq[0]) + 1) if seq else 1)

    def _check_owner(self, db: sqlite3.Connection) -> None:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app == APPLICATION_ID or (app == 0 and not tables):
            return
        if app == 0 and "outbox" in tables and tables <= set(_OWN_TABLES):
            # an outbox of an edgekd from before application_id: its tables must be ours exactly
            if all(
                tuple(r[1] for r in db.execute(f"PRAGMA table_info({t})")) == _OWN_TABLES[t]
                for t in tables
                if _OWN_TABLES[t]
            ):
                return
        what = f"application_id {app:#x}, " if app else ""
        shown = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
        db.close()
        raise OutboxError(
            f"outbox {self.path} is a SQLite database of another program ({what}tables: {shown or 'none'}); "
            "edgekd leaves it untouched: set mqtt.outbox_path to a file of edgekd's own (a new name is fine)"
        )

    # -- when the disk fails ---------------------------------------------------------------------

    def _enter_trouble(self, reason: str) -> None:
        first = self._trouble is None
        self._trouble = reason
        self._retry_at = time.monotonic() + DISK_RETRY_S
        if first:
            log.error(
                "outbox %s: cannot write results to the disk (%s); keeping up to %d of the newest in memory "
                "and retrying the disk every %.0f s (older ones are dropped and counted in results_dropped). "
                "Free space on the disk that holds it, or set mqtt.outbox_path to another disk",
                self.path, reason, self.memory_items, DISK_RETRY_S,
            )

    def _recover(self, force: bool = False) -> None:
        """With the lock held: while the disk fails, try it again (every DISK_RETRY_S, or now with
        `force`) and move what waits in memory onto it."""
        if self._trouble is None or (not force and time.monotonic() < self._retry_at):
            return
        self._retry_at = time.monotonic() + DISK_RETRY_S
        try:
            if self._db is None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if self._lockfile is None:
                    self._lockfile = self._take_lock()
                self._open_db()
            db = self._db
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in self._gone])
                db.executemany(
                    "INSERT INTO outbox (key, topic, payload, qos, created) VALUES (?, ?, ?, ?, ?)",
                    [(e.key, e.topic, sqlite3.Binary(e.payload), e.qos, e.created) for e in self._memory.values()],
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself on a full disk
                    db.execute("ROLLBACK")
                raise
            self._disk_rows = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except (sqlite3.Error, OSError, _DiskTrouble) as exc:
            reason = exc.reason if isinstance(exc, _DiskTrouble) else _disk_reason(exc, self._existing_parent())
            self._trouble = reason
            self._warn(
                logging.WARNING,
                "still",
                f"outbox {self.path}: the disk still takes no results ({reason}); {len(self._memory)} wait in memory, "
                f"{self.dropped_memory} dropped so far",
            )
            return
        except OutboxError as exc:  # the file was replaced by something that is not an outbox
            self._warn(logging.ERROR, "still", f"{exc}; {len(self._memory)} results wait in memory")
            return
        moved = len(self._memory)
        self._memory.clear()
        self._gone.clear()
        self._trouble = None
        self._dirty = True
        self._warn.reset("still")
        log.warning(
            "outbox %s: the disk takes results again: %d results moved from memory to it; %d were dropped while "
            "it could not take them",
            self.path, moved, self.dropped_memory,
        )

    def _keep_in_memory(self, entry: Entry) -> bool:
        if len(self._memory) >= self.memory_items:
            victim = next((k for k in self._memory if k > self._protected), None)
            self.dropped_memory += 1
            if victim is None:
                return False
            del self._memory[victim]
            self._warn(
                logging.WARNING,
                "memory",
                f"outbox {self.path}: {self.memory_items} results wait in memory for the disk ({self._trouble}); "
                f"dropping the oldest, {self.dropped_memory} so far",
            )
        self._memory[entry.key] = entry
        return True

    @property
    def in_memory(self) -> int:
        """Results held in memory because the disk failed: lost if the daemon stops before it recovers."""
        with self._lock:
            return len(self._memory)

    def flush_memory(self) -> int:
        """Try the disk now; return how many results are still only in memory."""
        with self._lock:
            self._recover(force=True)
            return len(self._memory)

    # -- the Outbox interface --------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._disk_rows - len(self._gone) + len(self._memory)

    def _drop_oldest(self) -> bool:
        """Make room under max_items: delete the oldest entry not in flight. False if all are."""
        db = self._db
        if db is not None and self._disk_rows - len(self._gone) > 0:
            row = db.execute(
                "SELECT key FROM outbox WHERE key > ? ORDER BY key LIMIT ?", (self._protected, len(self._gone) + 1)
            ).fetchall()
            victim = next((int(r[0]) for r in row if int(r[0]) not in self._gone), None)
            if victim is not None:
                try:
                    db.execute("DELETE FROM outbox WHERE key = ?", (victim,))
                    self._disk_rows -= 1
                except sqlite3.Error:
                    self._gone.add(victim)
                return True
        victim = next((k for k in self._memory if k > self._protected), None)
        if victim is None:
            return False
        del self._memory[victim]
        return True

    def put(self, topic: str, payload: bytes, qos: int, created: float | None = None) -> bool:
        """Never raises for a disk error: the entry is then kept in memory (see the class doc)."""
        created = time.time() if created is None else created
        with self._lock:
            self._recover()
            if self._disk_rows - len(self._gone) + len(self._memory) >= self.max_items:
                self.dropped_full += 1
                try:
                    if not self._drop_oldest():
                        return False
                except sqlite3.Error:
                    pass
            entry = Entry(self._next_key, topic, payload, qos, created)
            self._next_key += 1
            if self._trouble is None and self._db is not None:
                try:
                    self._db.execute(
                        "INSERT INTO outbox (key, topic, payload, qos, created) VALUES (?, ?, ?, ?, ?)",
                        (entry.key, topic, sqlite3.Binary(payload), qos, created),
                    )
                except sqlite3.Error as exc:
                    self._enter_trouble(_disk_reason(exc, self.path.parent))
                else:
                    self._disk_rows += 1
                    self._dirty = True
                    return True
            return self._keep_in_memory(entry)

    def after(self, key: int, limit: int, protect: bool = False) -> list[Entry]:
        """As MemoryOutbox.after: disk rows and entries held in memory, in key order."""
        with self._lock:
            out: list[Entry] = []
            if self._db is not None and self._disk_rows > len(self._gone):
                rows = self._db.execute(
                    "SELECT key, topic, payload, qos, created FROM outbox WHERE key > ? ORDER BY key LIMIT ?",
                    (key, limit + len(self._gone)),
                ).fetchall()
                out = [Entry(int(k), t, bytes(p), int(q), float(c)) for k, t, p, q, c in rows if int(k) not in self._gone]
            if self._memory:
                out.extend(e for k, e in self._memory.items() if k > key)
                out.sort(key=lambda e: e.key)
            out = out[:limit]
            if protect and out:
                self._protected = out[-1].key
        return out

    def remove(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        if not keys:
            return
        with self._lock:
            on_disk = [k for k in keys if self._memory.pop(k, None) is None and k not in self._gone]
            if not on_disk or self._db is None:
                return
            try:
                cur = self._db.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in on_disk])
                self._disk_rows -= max(0, cur.rowcount)
            except sqlite3.Error as exc:
                # acknowledged: hidden now, deleted when the disk takes writes again
                self._gone.update(on_disk)
                self._enter_trouble(_disk_reason(exc, self.path.parent))

    def expire(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock:
            old = [k for k, e in self._memory.items() if e.created < cutoff and k > self._protected]
            for k in old:
                del self._memory[k]
            n = len(old)
            if self._db is not None:
                try:
                    cur = self._db.execute("DELETE FROM outbox WHERE created < ? AND key > ?", (cutoff, self._protected))
                    n += max(0, cur.rowcount)
                    self._disk_rows -= max(0, cur.rowcount)
                except sqlite3.Error:
                    pass  # expired rows go when the disk takes writes again
            self.expired += n
        if n:
            log.warning("outbox %s: %d results older than %.0f s expired unsent", self.path, n, self.max_age_s)
        return n

    def sync(self) -> None:
        """Make every put so far durable against power loss; while the disk fails, try it again first.

        Each put's commit is in the WAL file: an fsync of that file makes it durable (what SQLite's
        synchronous=FULL does at every commit), at a third of a checkpoint's cost. Every
        CHECKPOINT_EVERY_SYNCS syncs, on the first sync after the file was (re)opened, and when the
        WAL has grown beyond CHECKPOINT_WAL_BYTES, a checkpoint (which fsyncs the WAL, copies it into
        the database and fsyncs that) does it instead, so the WAL is reused and stays small."""
        with self._sync_lock:
            with self._lock:
                self._recover()
                if not self._dirty or self._sync_db is None:
                    return
                self._dirty = False
            try:
                if not self._fsync_wal():
                    self._sync_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self._syncs_since_checkpoint = 0
            except (sqlite3.Error, OSError) as exc:
                with self._lock:
                    self._dirty = True
                self._syncs_since_checkpoint = CHECKPOINT_EVERY_SYNCS  # checkpoint when it is retried
                self._warn(
                    logging.WARNING,
                    "sync",
                    f"outbox {self.path}: cannot make results durable against power loss "
                    f"({_disk_reason(exc, self.path.parent)}); they survive a crash, and the checkpoint is retried",
                )

    def _fsync_wal(self) -> bool:
        """With _sync_lock held: fsync the WAL file, or False where a checkpoint is due instead."""
        self._syncs_since_checkpoint += 1
        if self._syncs_since_checkpoint > CHECKPOINT_EVERY_SYNCS:
            return False
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            st = os.stat(wal)
        except FileNotFoundError:
            return False
        if st.st_size > CHECKPOINT_WAL_BYTES:
            return False
        if self._wal_fd is None or os.fstat(self._wal_fd).st_ino != st.st_ino:
            # a WAL file this process has not synced yet (the file was reopened): checkpoint, which
            # also makes its directory entry durable; the fd serves the syncs after it
            self._close_wal_fd()
            self._wal_fd = os.open(wal, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            return False
        os.fsync(self._wal_fd)
        return True

    def _close_wal_fd(self) -> None:
        if self._wal_fd is not None:
            try:
                os.close(self._wal_fd)
            except OSError:
                pass
            self._wal_fd = None

    def run_id(self) -> str:
        with self._lock:
            run = max(int(time.time()), self._last_run + 1)
            if self._db is not None:
                try:
                    row = self._db.execute("SELECT value FROM meta WHERE name = 'last_run'").fetchone()
                    run = max(run, (int(row[0]) + 1) if row else 0)
                    self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('last_run', ?)", (run,))
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    pass  # a full disk: result ids stay unique by their random instance part
            self._last_run = run
        return str(run)

    def close(self) -> None:
        with self._lock:
            if self._lockfile is None and self._db is None:
                return
            if self._memory:  # flush_memory() is the last try; what it could not move is lost
                log.error(
                    "outbox %s: %d results held in memory while the disk failed are lost at exit (%s)",
                    self.path, len(self._memory), self._trouble,
                )
                self._memory.clear()
            try:
                if self._sync_db is not None:
                    with self._sync_lock:
                        self._sync_db.close()
                        self._close_wal_fd()
                if self._db is not None:
                    try:
                        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    except sqlite3.Error:
                        pass  # the rows are committed in the WAL; the next start reads them
            finally:
                if self._db is not None:
                    self._db.close()
                self._db = self._sync_db = None
                self._release_lock()
