import threading
import time

import numpy as np
import pytest

from edgekd.audio.ringbuffer import RingBuffer


def read_all(ring, size=64):
    out = np.empty(size, dtype=np.float32)
    got = []
    while True:
        r = ring.read_into(out, timeout=0)
        if r.count == 0:
            return got
        got.append((r.start, out[: r.count].copy(), r.dropped))


def test_reads_back_what_was_written_in_order_one_write_at_a_time():
    ring = RingBuffer(100)
    ring.write(np.arange(10, dtype=np.float32), arrival=1.0)
    ring.write(np.arange(10, 25, dtype=np.float32), arrival=2.0)
    out = np.empty(100, dtype=np.float32)
    r1 = ring.read_into(out, timeout=0)
    assert (r1.start, r1.count, r1.dropped, r1.arrival) == (0, 10, 0, 1.0)
    assert np.array_equal(out[:10], np.arange(10))
    r2 = ring.read_into(out, timeout=0)
    assert (r2.start, r2.count, r2.arrival) == (10, 15, 2.0)
    assert np.array_equal(out[:15], np.arange(10, 25))


def test_wraps_around_the_end_of_the_array():
    ring = RingBuffer(8)
    x = np.arange(30, dtype=np.float32)
    seen = []
    for i in range(0, 30, 3):
        ring.write(x[i : i + 3])
        seen += [v for _, chunk, _ in read_all(ring) for v in chunk]
    assert seen == list(range(30))


def test_overrun_drops_the_oldest_and_counts_it():
    ring = RingBuffer(10)
    for i in range(5):  # 20 samples into a 10-sample ring, nobody reading
        ring.write(np.full(4, i, dtype=np.float32))
    out = np.empty(16, dtype=np.float32)
    r = ring.read_into(out, timeout=0)
    assert r.dropped == 10 and r.start == 10 and ring.dropped == 10
    rest = np.concatenate([out[: r.count]] + [c for _, c, _ in read_all(ring)])
    assert np.array_equal(rest, [2, 2, 3, 3, 3, 3, 4, 4, 4, 4])  # the newest 10 samples survive


def test_a_write_larger_than_the_ring_keeps_the_newest_samples():
    ring = RingBuffer(4)
    ring.write(np.arange(10, dtype=np.float32))
    chunks = read_all(ring)
    assert chunks[0][2] == 6 and np.array_equal(chunks[0][1], [6, 7, 8, 9])


def test_blocking_write_waits_for_the_reader_instead_of_dropping():
    ring = RingBuffer(8)
    x = np.arange(100, dtype=np.float32)

    def writer():
        for i in range(0, 100, 5):
            ring.write(x[i : i + 5], block=True)
        ring.close()

    t = threading.Thread(target=writer)
    t.start()
    out = np.empty(8, dtype=np.float32)
    got = []
    while True:
        r = ring.read_into(out, timeout=1)
        got.extend(out[: r.count])
        if r.count == 0 and ring.closed and ring.available() == 0:
            break
    t.join()
    assert ring.dropped == 0 and np.array_equal(got, x)


def test_reader_blocks_until_data_or_timeout_without_spinning():
    ring = RingBuffer(16)
    out = np.empty(16, dtype=np.float32)
    t0 = time.monotonic()
    assert ring.read_into(out, timeout=0.1).count == 0
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.05, lambda: ring.write(np.ones(3, dtype=np.float32))).start()
    assert ring.read_into(out, timeout=2).count == 3


def test_close_wakes_a_waiting_reader():
    ring = RingBuffer(16)
    threading.Timer(0.05, ring.close).start()
    t0 = time.monotonic()
    r = ring.read_into(np.empty(4, dtype=np.float32), timeout=5)
    assert r.count == 0 and ring.closed and time.monotonic() - t0 < 2


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        RingBuffer(0)


class _CountingCondition(threading.Condition):
    """A Condition that counts notifications, so a test can see which writes would wake the reader."""

    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify_all(self) -> None:  # type: ignore[override]
        self.notified += 1
        super().notify_all()


def _waiting_reader(ring, want, timeout=5.0):
    """Start a reader thread blocked in read_into(want=...); returns (thread, result holder)."""
    got = {}

    def read():
        got["r"] = ring.read_into(np.empty(4096, dtype=np.float32), timeout=timeout, want=want)
        got["t"] = time.monotonic()

    t = threading.Thread(target=read)
    t.start()
    deadline = time.monotonic() + 2
    while ring._want != want and time.monotonic() < deadline:  # until the reader is waiting
        time.sleep(0.005)
    assert ring._want == want
    return t, got


def test_a_reader_waiting_for_a_window_is_woken_once_by_the_write_that_completes_it():
    """Writes below what the reader waits for do not notify it; the one that reaches it does, and the
    reader then reads one write at a time as always (the first write's samples and arrival)."""
    ring = RingBuffer(16000)
    ring._cond = cond = _CountingCondition()
    t, got = _waiting_reader(ring, want=3000)
    ring.write(np.full(1024, 1, np.float32), arrival=1.0)
    ring.write(np.full(1024, 2, np.float32), arrival=2.0)
    time.sleep(0.1)
    assert "r" not in got and cond.notified == 0  # 2,048 of 3,000: the reader sleeps on
    ring.write(np.full(1024, 3, np.float32), arrival=3.0)
    t.join(5)
    r = got["r"]
    assert (r.start, r.count, r.arrival) == (0, 1024, 1.0) and cond.notified >= 1
    assert ring._want == 1  # the next read waits for any sample unless it asks for more
    out = np.empty(4096, np.float32)
    assert [ring.read_into(out, timeout=0).count for _ in range(3)] == [1024, 1024, 0]


def test_want_returns_at_once_when_enough_is_there_and_after_the_timeout_with_what_is():
    ring = RingBuffer(16000)
    out = np.empty(4096, np.float32)
    ring.write(np.ones(2000, np.float32))
    ring.write(np.ones(2000, np.float32))
    t0 = time.monotonic()
    assert ring.read_into(out, timeout=5, want=3000).count == 2000 and time.monotonic() - t0 < 1
    ring.read_into(out, timeout=0)
    ring.write(np.ones(500, np.float32))
    t0 = time.monotonic()
    r = ring.read_into(out, timeout=0.1, want=3000)  # not enough by the timeout: what is there
    assert r.count == 500 and time.monotonic() - t0 >= 0.09


@pytest.mark.parametrize("event", ["close", "skip"])
def test_close_and_a_skip_wake_a_reader_waiting_for_more(event):
    ring = RingBuffer(16000)
    ring.write(np.ones(100, np.float32))
    ring.read_into(np.empty(4096, np.float32), timeout=0)
    t, got = _waiting_reader(ring, want=3000)
    t0 = time.monotonic()
    ring.close() if event == "close" else ring.skip(50)
    t.join(5)
    assert "r" in got and got["t"] - t0 < 2
    assert got["r"].count == 0 and (got["r"].skipped == 50 if event == "skip" else ring.closed)


def test_want_is_never_more_than_the_ring_can_hold():
    """A reader asking for more than the ring holds would sleep while a blocking writer waits for room."""
    ring = RingBuffer(1000)
    done = threading.Event()

    def writer():
        for _ in range(5):
            ring.write(np.ones(400, np.float32), block=True)
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    out = np.empty(4096, np.float32)
    total = 0
    deadline = time.monotonic() + 5
    while total < 2000 and time.monotonic() < deadline:
        total += ring.read_into(out, timeout=1, want=10_000).count
    assert total == 2000 and done.wait(2)
