"""Latency percentiles: numpy's arithmetic, without numpy.percentile (and the numpy.ma it imports)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.stats import PERCENTILES, LatencyTracker, percentile_of_sorted

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, min_size=1, max_size=300), st.sampled_from([0.0, 1.0, 33.3, 50.0, 95.0, 99.0, 99.9, 100.0]))
def test_percentile_equals_numpy(values, q):
    assert percentile_of_sorted(sorted(values), q) == float(np.percentile(np.array(values), q))


def test_summary_over_a_wrapped_history():
    t = LatencyTracker(size=64)
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 3.0, size=200)
    for v in values:
        t.add(float(v))
    kept = values[-64:]  # the ring holds the last 64, in some order
    want = {name: round(float(np.percentile(kept, q)), 3) for name, q in PERCENTILES} | {"max": round(float(kept.max()), 3)}
    assert t.summary() == want
