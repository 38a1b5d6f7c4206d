"""Hypothesis: the payload builder (Pipeline.result -> ResultPayload) makes, for any labels,
scores, times and ids, JSON that parses back to the same payload and validates against the
schema subscribers get from `edgekd schema`; invalid numbers are refused, never published."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgekd.contract import ModelMetadata
from edgekd.mqtt.schema import all_schemas
from edgekd.payloads import ResultPayload, StatsPayload
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
from edgekd.postprocess import Decision, PostConfig
from edgekd.sink import MemorySink

SCHEMAS = all_schemas()
labels_st = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8, unique=True)


class FixedScorer:
    def __init__(self, labels, rate, window):
        self.meta = ModelMetadata(task="emotion", labels=tuple(labels), sample_rate=rate, window_samples=window,
                                  multi_label=False, name="m", version="1.0", training={})
        self.short_hash = "0123456789ab"

    def scores(self, windows):
        raise AssertionError("not used")


@settings(max_examples=200, deadline=None)
@given(
    labels=labels_st,
    data=st.data(),
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    start=st.integers(0, 10**10),
    seq=st.integers(0, 10**9),
    run_id=st.integers(0, 2**40).map(str),
    t0=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(lambda d: d.replace(tzinfo=timezone.utc)),
    inference=st.floats(0, 1e6),
)
@pytest.mark.slow
def test_built_results_round_trip_and_match_the_schema(labels, data, rate, start, seq, run_id, t0, inference):
    raw = data.draw(st.lists(st.floats(0, 1), min_size=len(labels), max_size=len(labels)))
    total = sum(raw) or 1.0
    scores = {label: v / total for label, v in zip(labels, raw)}
    top = max(scores, key=scores.get)
    runner = ModelRunner(FixedScorer(labels, rate, 1600), RunnerSpec(400, PostConfig(), gate_db=None))
    runner.seq = seq
    pipe = Pipeline([runner], rate, MemorySink(), "dev-1", t0=t0, run_id=run_id)
    d = Decision(label=top, score=min(1.0, scores[top]), scores=scores, detected=False, event="window")
    payload = pipe.result(runner, start, 1600, d, inference)
    assert payload.id == f"dev-1/0123456789ab/{runner.instance}/{run_id}-{seq}" and payload.seq == seq and runner.seq == seq + 1
    assert payload.window_start == t0 + timedelta(seconds=start / rate)
    span = payload.window_end - payload.window_start  # datetimes hold microseconds: 1 us of rounding
    assert abs(span - timedelta(seconds=1599 / rate)) <= timedelta(microseconds=1)
    text = payload.to_json()
    body = json.loads(text)
    jsonschema.validate(body, SCHEMAS["result"])
    assert ResultPayload.model_validate_json(text) == payload
    assert set(body["scores"]) == set(labels)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.1, 1.5])
def test_a_score_that_is_not_a_probability_is_refused(bad):
    now = datetime.now(timezone.utc)
    with pytest.raises(ValidationError):
        ResultPayload(id="d/h/1-0", device="d", model="m", model_version="1", model_hash="h", task="t", label="a",
                      score=bad, scores={"a": 0.5}, detected=False, event="window", seq=0, window_start=now,
                      window_end=now, latency_ms={"inference": 0, "pipeline": 0})


@settings(max_examples=100, deadline=None)
@given(
    counters=st.lists(st.integers(0, 2**53), min_size=5, max_size=5),
    floats=st.lists(st.floats(0, 1e9), min_size=4, max_size=4),
    state=st.sampled_from(["running", "failed", "ended"]),
    source=st.text(max_size=40),
    dc=st.floats(-1, 1),
)
def test_stats_round_trip_and_match_the_schema(counters, floats, state, source, dc):
    s = StatsPayload(
        device="d", time=datetime.now(timezone.utc), uptime_s=floats[0], source=source, source_state=state,
        audio_seconds=floats[1], dropped_audio_samples=counters[0], results_dropped=counters[1],
        queue_depth=counters[2], broker_connected=True, cpu_percent=floats[2], rss_mb=floats[3],
        audio_nonfinite=counters[3], audio_clipped=counters[4], audio_dc_offset=dc, models=[],
    )
    body = json.loads(s.to_json())
    jsonschema.validate(body, SCHEMAS["stats"])
    assert StatsPayload.model_validate_json(s.to_json()) == s
    assert np.isfinite(body["audio_dc_offset"])
