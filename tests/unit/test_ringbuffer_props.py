"""Hypothesis: whatever the order of writes, reads and capture outages, the ring buffer hands the
reader exactly the samples written, in order, and accounts for every other one as dropped (the
reader fell behind) or skipped (capture was down)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.audio.ringbuffer import RingBuffer

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 40)),
        st.tuples(st.just("read"), st.integers(1, 50)),
        st.tuples(st.just("skip"), st.integers(1, 60)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 64), program=ops)
def test_every_sample_is_read_once_in_order_or_counted_as_dropped_or_skipped(capacity, program):
    ring = RingBuffer(capacity)
    written: dict[int, float] = {}  # sample index -> value (skipped indices have none)
    index = 0
    value = 0.0
    position = 0  # where the reader is
    read = dropped = skipped = 0
    out = np.empty(64, dtype=np.float32)

    def read_once(size: int) -> int:
        nonlocal position, read, dropped, skipped
        r = ring.read_into(out[:size], timeout=0)
        assert r.start == position + r.dropped + r.skipped  # no sample unaccounted for
        for i in range(r.count):
            assert r.start + i in written, "read a sample that never came"
            assert out[i] == written[r.start + i]
        position = r.start + r.count
        read += r.count
        dropped += r.dropped
        skipped += r.skipped
        return r.count + r.dropped + r.skipped

    for op, n in program:
        if op == "write":
            x = np.arange(value, value + n, dtype=np.float32)
            ring.write(x)
            for i, v in enumerate(x):
                written[index + i] = float(v)
            index += n
            value += n
        elif op == "skip":
            ring.skip(n)
            index += n
        else:
            read_once(n)
    ring.close()
    while read_once(64):
        pass
    assert position == index == ring.written
    assert read + dropped + skipped == index
    assert dropped == ring.dropped
    assert ring.skipped == index - len(written)  # every sample that never came, as the source said
    assert skipped <= ring.skipped  # a reader far behind may count part of an outage as dropped
