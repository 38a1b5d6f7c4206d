"""The outbox on its own: durable across reopen, bounded by size and age, one daemon per file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.mqtt.outbox import MemoryOutbox, OutboxError, SqliteOutbox, default_outbox_path, state_directory


def payload(n: int) -> bytes:
    return json.dumps({"seq": n}).encode()


def seqs(box) -> list[int]:
    return [json.loads(e.payload)["seq"] for e in box.after(0, 10_000)]


def test_what_was_put_is_there_after_reopening_in_order(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = SqliteOutbox(path)
    for n in range(5):
        box.put("t/a", payload(n), 1)
    box.remove([box.after(0, 1)[0].key])  # the first one was acknowledged
    box.close()
    again = SqliteOutbox(path)
    assert seqs(again) == [1, 2, 3, 4] and len(again) == 4
    assert {e.topic for e in again.after(0, 10)} == {"t/a"} and {e.qos for e in again.after(0, 10)} == {1}
    again.put("t/a", payload(5), 1)
    assert seqs(again) == [1, 2, 3, 4, 5]  # new keys come after the old ones
    again.close()


def test_a_row_survives_kill_9_of_the_process_that_put_it(tmp_path):
    """put() commits before it returns: SIGKILL right after it (no close) keeps the row."""
    path = tmp_path / "o.sqlite3"
    child = (
        "import os, signal, sys\n"
        "from edgekd.mqtt.outbox import SqliteOutbox\n"
        "box = SqliteOutbox(sys.argv[1])\n"
        "for n in range(3): box.put('t', str(n).encode(), 1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, timeout=60)
    assert proc.returncode == -9
    box = SqliteOutbox(path)
    assert [e.payload for e in box.after(0, 10)] == [b"0", b"1", b"2"]
    box.close()


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_full_drops_the_oldest_not_in_flight_and_counts(tmp_path, kind):
    box = MemoryOutbox(max_items=3) if kind == "memory" else SqliteOutbox(tmp_path / "o.sqlite3", max_items=3)
    for n in range(3):
        box.put("t", payload(n), 1)
    first = box.after(0, 1)[0].key
    box.protect(first)  # seq 0 is in flight: it must not be the one dropped
    assert box.put("t", payload(3), 1)
    assert seqs(box) == [0, 2, 3] and box.dropped_full == 1
    box.protect(box.after(0, 10)[-1].key)  # everything in flight: a new one is refused
    assert not box.put("t", payload(4), 1)
    assert seqs(box) == [0, 2, 3] and box.dropped_full == 2
    box.close()


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_entries_older_than_max_age_expire_and_are_counted(tmp_path, kind):
    box = MemoryOutbox(max_age_s=60) if kind == "memory" else SqliteOutbox(tmp_path / "o.sqlite3", max_age_s=60)
    now = time.time()
    box.put("t", payload(0), 1, created=now - 120)
    box.put("t", payload(1), 1, created=now - 90)
    box.put("t", payload(2), 1, created=now)
    assert box.expire(now) == 2
    assert seqs(box) == [2] and box.expired == 2 and len(box) == 1
    box.close()


def test_old_rows_expire_when_the_outbox_opens(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = SqliteOutbox(path)
    box.put("t", payload(0), 1, created=time.time() - 3600)
    box.put("t", payload(1), 1)
    box.close()
    again = SqliteOutbox(path, max_age_s=600)
    assert seqs(again) == [1] and again.expired == 1
    again.close()


def test_run_ids_grow_across_reopening_even_within_one_second(tmp_path):
    path = tmp_path / "o.sqlite3"
    ids = []
    for _ in range(3):
        box = SqliteOutbox(path)
        ids.append(int(box.run_id()))
        box.close()
    assert ids == sorted(set(ids)) and ids[0] >= int(time.time()) - 5
    mem = MemoryOutbox()
    assert int(mem.run_id()) < int(mem.run_id())


def test_a_second_daemon_on_the_same_outbox_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = SqliteOutbox(path)
    with pytest.raises(OutboxError, match=r"in use by edgekd pid \d+.*device_id or set mqtt.outbox_path") as info:
        SqliteOutbox(path)
    assert str(path) in str(info.value)
    box.close()
    SqliteOutbox(path).close()  # free again once the first one closed


def test_a_file_that_is_not_sqlite_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database, it is a text file " * 100)
    with pytest.raises(OutboxError, match="not a usable SQLite database.*move it aside") as info:
        SqliteOutbox(path)
    assert str(path) in str(info.value)


def test_a_directory_that_cannot_be_made_is_refused_with_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match='cannot create its directory.*outbox_path.*"memory"'):
        SqliteOutbox(blocker / "sub" / "o.sqlite3")


def test_the_outbox_file_is_private(tmp_path):
    box = SqliteOutbox(tmp_path / "o.sqlite3")
    box.put("t", payload(0), 1)
    box.sync()
    assert (tmp_path / "o.sqlite3").stat().st_mode & 0o077 == 0
    box.close()
    with sqlite3.connect(tmp_path / "o.sqlite3") as db:  # a plain SQLite file anyone can inspect
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_path_follows_systemd_then_xdg_then_home(tmp_path):
    assert state_directory({"STATE_DIRECTORY": "/var/lib/edgekd"}) == state_directory({"STATE_DIRECTORY": "/var/lib/edgekd:/x"})
    assert default_outbox_path("kitchen", {"STATE_DIRECTORY": "/var/lib/edgekd"}).as_posix() == "/var/lib/edgekd/outbox-kitchen.sqlite3"
    assert state_directory({"XDG_STATE_HOME": "/s", "HOME": "/h"}).as_posix() == "/s/edgekd"
    assert state_directory({"HOME": "/h"}).as_posix() == "/h/.local/state/edgekd"


# A model of the outbox: a list of (key, seq), oldest first, and the highest key in flight.
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 0)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("fly"), st.integers(0, 5)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(max_items=st.integers(1, 6), program=ops)
def test_memory_and_sqlite_outboxes_agree_with_the_policy(tmp_path_factory, max_items, program):
    disk = SqliteOutbox(tmp_path_factory.mktemp("o") / "o.sqlite3", max_items=max_items)
    mem = MemoryOutbox(max_items=max_items)
    model: list[int] = []  # seqs
    keys: dict[int, int] = {}  # seq -> key (same in both: from 1, +1 per entry put)
    next_key = 1
    protected_seq = -1
    dropped = n = 0
    try:
        for op, arg in program:
            if op == "put":
                if len(model) >= max_items:
                    dropped += 1
                    victim = next((s for s in model if s > protected_seq), None)
                    if victim is None:
                        for box in (disk, mem):
                            assert not box.put("t", payload(n), 1)
                        n += 1
                        continue
                    model.remove(victim)
                for box in (disk, mem):
                    assert box.put("t", payload(n), 1)
                keys[n] = next_key
                next_key += 1
                model.append(n)
                n += 1
            elif op == "ack" and model:
                s = model[min(arg, len(model) - 1)]
                model.remove(s)
                for box in (disk, mem):
                    box.remove([keys[s]])
            elif op == "fly" and model:
                protected_seq = model[min(arg, len(model) - 1)]
                for box in (disk, mem):
                    box.protect(keys[protected_seq])
            for box in (disk, mem):
                assert seqs(box) == model and len(box) == len(model) and box.dropped_full == dropped
    finally:
        disk.close()


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_entries_taken_for_hand_over_are_never_the_ones_a_full_outbox_drops(tmp_path, kind):
    """after(protect=True) marks what it returns in the same step, so a put racing with the hand-over
    drops a newer pending entry instead of one about to be published (which would count it twice)."""
    box = MemoryOutbox(max_items=4) if kind == "memory" else SqliteOutbox(tmp_path / "o.sqlite3", max_items=4)
    for n in range(4):
        box.put("t", payload(n), 1)
    taken = box.after(0, 2, protect=True)
    assert [json.loads(e.payload)["seq"] for e in taken] == [0, 1]
    box.put("t", payload(4), 1)
    assert seqs(box) == [0, 1, 3, 4] and box.dropped_full == 1
    box.close()


def test_sync_fsyncs_the_wal_and_checkpoints_now_and_then_so_the_wal_stays_small(tmp_path, monkeypatch):
    import edgekd.mqtt.outbox_disk as outbox_disk

    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(outbox_disk.os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])
    box = SqliteOutbox(tmp_path / "o.sqlite3")
    wal = tmp_path / "o.sqlite3-wal"
    sizes = []
    for n in range(5 * outbox_disk.CHECKPOINT_EVERY_SYNCS):
        box.put("t", payload(n), 1)
        box.sync()
        box.remove(e.key for e in box.after(0, 1))  # acknowledged, as the sender does
        sizes.append(wal.stat().st_size)
    syncs = 5 * outbox_disk.CHECKPOINT_EVERY_SYNCS
    assert syncs - 8 <= len(fsynced) < syncs  # an fsync of the WAL for most syncs, a checkpoint for the rest
    assert max(sizes) < 1 << 20 and sizes[-1] <= sizes[3 * outbox_disk.CHECKPOINT_EVERY_SYNCS]  # reused, not grown
    box.put("t", payload(9999), 1)
    box.sync()
    box.close()
    again = SqliteOutbox(tmp_path / "o.sqlite3")
    assert [e.payload for e in again.after(0, 10)] == [payload(9999)]
    again.close()
