"""Nothing lost: `edgekd serve` (the real CLI process, a real speech clip paced in real time)
publishing to a real mosquitto, killed with SIGKILL mid-stream and started again.

The subscriber is mosquitto_sub with a persistent QoS 1 session on a broker with persistence, so
what it prints is what reached the broker. After the restart every result the killed process
produced must arrive: the ones delivered before the kill, and the ones that were still in its
outbox (read from the SQLite file after the kill). A duplicate with the same id is allowed, a gap
is not; ids of the second run differ from the first's although seq starts again from 0.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

import edgekd

pytestmark = pytest.mark.integration

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 2.1 s
TOPIC = "edgekd/k9/loudness"


def serve(broker_url: str, model: Path, state: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.update(PYTHONUNBUFFERED="1", STATE_DIRECTORY=str(state))
    # fast reconnects so that the test does not wait out paho's default backoff
    env.update(EDGEKD_MQTT__RECONNECT_MIN="0.2", EDGEKD_MQTT__RECONNECT_MAX="0.5")
    return subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--model", str(model), "--source", str(CLIP), "--realtime", "--loop",
         "--gate-db", "off", "--broker", broker_url, "--device-id", "k9", "--stats-interval", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )


def first_arrivals(messages) -> list[tuple[str, int]]:
    """(run id, seq) in order of first arrival: duplicates of an id dropped, as a subscriber would."""
    seen: set[str] = set()
    out = []
    for m in messages:
        if m.topic != TOPIC:
            continue
        body = m.json()
        if body["id"] not in seen:
            seen.add(body["id"])
            out.append((body["id"].rsplit("/", 1)[1].split("-")[0], body["seq"]))
    return out


def by_run(messages) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = defaultdict(list)
    for run, seq in first_arrivals(messages):
        runs[run].append(seq)
    return runs


def outbox_seqs(state: Path) -> list[int]:
    """Seqs still waiting in the killed daemon's outbox."""
    import json

    with sqlite3.connect(state / "outbox-k9.sqlite3") as db:
        rows = db.execute("SELECT payload FROM outbox ORDER BY key").fetchall()
    return [json.loads(p)["seq"] for (p,) in rows]


@pytest.mark.slow
@pytest.mark.parametrize("broker_down", [False, True], ids=["broker-up", "broker-down-too"])
def test_kill_9_mid_stream_then_restart_delivers_every_result_of_the_killed_run(
    mosquitto_factory, energy_onnx, tmp_path, broker_down
):
    broker = mosquitto_factory(persistence=True)
    sub = broker.subscribe(TOPIC, count=100_000, timeout=120, qos=1, client_id="checker")
    state = tmp_path / "state"
    first = serve(broker.url, energy_onnx, state)
    second = None
    try:
        sub.wait_until(lambda got: sum(map(len, by_run(got).values())) >= 4, 30)
        if broker_down:
            broker.stop()
            time.sleep(1.5)  # about 6 more results go into the outbox meanwhile
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        waiting = outbox_seqs(state)
        delivered_before = by_run(sub.messages())
        assert len(delivered_before) == 1
        (run1,) = delivered_before
        produced = sorted(set(delivered_before[run1]) | set(waiting))
        if broker_down:
            assert len(waiting) >= 3  # the case this test is about did happen
            broker.start()
        second = serve(broker.url, energy_onnx, state)
        got = sub.wait_until(
            lambda got: set(produced) <= set(by_run(got).get(run1, []))
            and any(len(seqs) >= 3 for run, seqs in by_run(got).items() if run != run1),
            60,
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
    runs = by_run(got)
    run2 = next(r for r in runs if r != run1)
    assert int(run2) > int(run1)
    seqs1 = runs[run1]
    assert seqs1 == list(range(len(seqs1)))  # in order, no gap (duplicates were dropped by id)
    assert seqs1[-1] == produced[-1] and produced == list(range(len(produced)))
    assert runs[run2][:3] == [0, 1, 2]
    order = [run for run, _ in first_arrivals(got)]
    assert order.index(run2) > len(order) - 1 - order[::-1].index(run1)  # the old run's results went out first
