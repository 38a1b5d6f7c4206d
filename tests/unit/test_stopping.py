import logging

import pytest

from edgekd.failures import FAILURES_TO_STOP, ModelFailures
from edgekd.stopping import END_OF_SOURCE_CLOSE_S, FORCED_CLOSE_S, StopBound


def test_before_a_stop_nothing_is_bounded():
    bound = StopBound(5.0)
    assert not bound.requested and bound.drain_left() == float("inf") and bound.time_left() is None
    assert bound.close_timeout() == END_OF_SOURCE_CLOSE_S


@pytest.mark.parametrize("timeout, reserve", [(1.0, 0.4), (5.0, 2.0), (60.0, 2.0)])
def test_a_stop_keeps_part_of_the_bound_for_closing(timeout, reserve):
    bound = StopBound(timeout)
    bound.request()
    assert bound.close_reserve_s == pytest.approx(reserve)
    assert bound.drain_left() == pytest.approx(timeout - reserve, abs=0.05)
    assert bound.time_left() == pytest.approx(timeout, abs=0.05)
    assert bound.close_timeout() <= timeout


def test_a_second_request_does_not_move_the_deadline_and_force_ends_draining():
    bound = StopBound(5.0)
    bound.request()
    first = bound.requested_at
    bound.request()
    assert bound.requested_at == first
    bound.force()
    assert bound.forced and bound.drain_left() == 0.0 and bound.close_timeout() == FORCED_CLOSE_S


def test_failures_in_a_row_stop_a_model_and_a_success_resets_the_run(caplog):
    f = ModelFailures("m")
    for _ in range(FAILURES_TO_STOP - 1):
        f.record("boom")
    f.succeeded()
    for _ in range(FAILURES_TO_STOP - 1):
        f.record("boom")
    assert f.state == "running" and f.failed == 2 * (FAILURES_TO_STOP - 1)
    f.record("boom again")
    assert f.stopped and f.error == "boom again"
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 1


def test_classify_style_failures_never_stop_and_log_nothing(caplog):
    f = ModelFailures("m", limit=None, logs=False)
    for _ in range(100):
        f.record("boom")
    assert f.state == "running" and f.failed == 100 and not caplog.records
