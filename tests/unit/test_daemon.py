import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import edgekd
from edgekd.audio.decode import AudioError, decode_file
from edgekd.audio.sources import FileSource
from edgekd.config import ConfigError, load_settings
from edgekd.contract import ModelMetadata
from edgekd.daemon import Daemon, build_runners
from edgekd.model import Model
from edgekd.payloads import ResultPayload, StatsPayload
from edgekd.pipeline import window_dbfs
from edgekd.sink import MemorySink

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"


@pytest.fixture
def energy(energy_onnx):
    return Model(energy_onnx)


def settings(models, **kw):
    return load_settings(overrides={"models": [{"path": str(getattr(m, "path", "fake.onnx"))} for m in models], **kw}, environ={})


def serve_file(models, path=CLIP, **kw):
    s = settings(models, **kw)
    sink = MemorySink()
    d = Daemon(FileSource(path), build_runners(s, models), sink, device="dev", stats_interval=60)
    d.run()
    return d, sink


def test_a_file_is_served_to_the_end_then_the_sink_is_closed(energy):
    d, sink = serve_file([energy])
    n = len(decode_file(CLIP).samples)
    assert len(sink.results) == (n - 16000) // 4000 + 1  # 1 s windows every 0.25 s
    assert sink.closed and d.source_state == "ended"
    assert [r.seq for r in sink.results] == list(range(len(sink.results)))
    stats = sink.stats[-1]
    assert isinstance(stats, StatsPayload) and stats.source_state == "ended"
    assert stats.models[0].windows == len(sink.results) and stats.models[0].published == len(sink.results)
    assert stats.dropped_audio_samples == 0 and stats.audio_seconds == pytest.approx(n / 16000, abs=0.01)
    assert stats.rss_mb > 0 and set(stats.models[0].pipeline_ms) == {"p50", "p95", "p99", "max"}


def test_result_payload_fields(energy):
    _, sink = serve_file([energy])
    r0, r1 = sink.results[:2]
    assert isinstance(r0, ResultPayload)
    assert r0.id.startswith(f"dev/{energy.short_hash}/") and r0.id.endswith("-0") and r0.id != r1.id
    assert r0.model == "energy-test" and r0.task == "loudness" and r0.model_hash == energy.short_hash
    assert set(r0.scores) == {"quiet", "loud"} and r0.score == max(r0.scores.values())
    # timestamps come from the sample counter: exactly one hop apart, one window long
    assert r1.window_start - r0.window_start == timedelta(seconds=0.25)
    assert r0.window_end - r0.window_start == timedelta(seconds=15999 / 16000)
    assert r0.window_start.tzinfo is not None
    # pipeline latency runs from the audio's arrival to hand-off, so it holds the inference inside it
    assert all(r.latency_ms.pipeline >= r.latency_ms.inference > 0 for r in sink.results)
    ResultPayload.model_validate_json(r0.to_json())


def test_hop_per_model_from_settings(energy):
    _, sink = serve_file([energy], hops={"loudness": 0.5})
    starts = [r.window_start for r in sink.results]
    assert all(b - a == timedelta(seconds=0.5) for a, b in zip(starts, starts[1:]))


def test_unknown_hop_key_is_a_config_error(energy):
    with pytest.raises(ConfigError, match="hops.emotion"):
        build_runners(settings([energy], hops={"emotion": 0.5}), [energy])


def test_energy_gate_skips_silence_and_counts_it(energy, tmp_path):
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(32000, dtype=np.float32), 16000)
    _, sink = serve_file([energy], path=quiet)
    assert sink.results == [] and sink.stats[-1].models[0].gated == 5
    assert window_dbfs(np.zeros(10, np.float32)) < -100
    assert window_dbfs(np.ones(10, np.float32)) == pytest.approx(0.0)


def test_events_mode_publishes_fewer(energy):
    _, all_ = serve_file([energy])
    _, events = serve_file([energy], defaults={"mode": "events", "refractory": 10})
    assert 0 < len(events.results) < len(all_.results)
    assert [r.seq for r in events.results] == list(range(len(events.results)))


class FakeModel:
    """A scorer that says what it is told and can be slow."""

    def __init__(self, name, task, labels, delay=0.0, rate=16000, window=4000, pick=0):
        self.meta = ModelMetadata(task=task, labels=labels, sample_rate=rate, window_samples=window,
                                  multi_label=False, name=name, version="1")
        self.short_hash = name[:12]
        self.path = f"{name}.onnx"
        self.delay = delay
        self.pick = pick
        self.calls = 0

    def scores(self, windows):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        s = np.zeros((len(windows), len(self.meta.labels)), dtype=np.float32)
        s[:, self.pick] = 1.0
        return s


def test_label_gate_runs_a_model_only_while_another_detects_its_label():
    cough = FakeModel("cough", "cough", ("cough", "other"), pick=1)  # never says cough
    covid = FakeModel("covid", "covid", ("positive", "negative"))
    s = settings([cough, covid], gates={"covid": "cough:cough"})
    _, sink = serve_one(s, [cough, covid])
    assert covid.calls == 0 and all(r.task == "cough" for r in sink.results)
    cough.pick = 0  # now it hears coughs
    _, sink = serve_one(s, [cough, covid])
    assert covid.calls > 0 and any(r.task == "covid" for r in sink.results)


def test_gate_naming_an_unknown_model_is_a_config_error():
    covid = FakeModel("covid", "covid", ("positive", "negative"))
    with pytest.raises(ConfigError, match="no other model is named 'cough'"):
        build_runners(settings([covid], gates={"covid": "cough:cough"}), [covid])


def serve_one(s, models):
    sink = MemorySink()
    d = Daemon(FileSource(CLIP), build_runners(s, models), sink, device="dev", stats_interval=60)
    d.run()
    return d, sink


class LiveSource:
    """Writes a clip into the ring as fast as it can without waiting, like a mic that never pauses."""

    rate = 16000
    description = "fake live source"

    def __init__(self, samples, chunk=512):
        self.samples, self.chunk = samples, chunk

    def run(self, ring, stop):
        for i in range(0, len(self.samples), self.chunk):
            if stop.is_set():
                return
            ring.write(self.samples[i : i + self.chunk])


def test_slow_consumer_drops_the_oldest_audio_counts_it_and_keeps_timestamps():
    slow = FakeModel("slow", "slow", ("a", "b"), delay=0.02)
    s = settings([slow])
    samples = np.tile(decode_file(CLIP).samples, 4)
    sink = MemorySink()
    d = Daemon(LiveSource(samples), build_runners(s, [slow]), sink, device="dev", stats_interval=60, buffer_seconds=0.5)
    d.run()
    st = sink.stats[-1]
    assert st.dropped_audio_samples > 0
    assert st.models[0].windows < (len(samples) - 4000) // 1000 + 1
    # windows after a gap still sit on the sample clock (multiples of the hop from the start)
    t0 = sink.results[0].window_start
    for r in sink.results:
        offset = (r.window_start - t0).total_seconds()
        assert offset >= 0 and abs(offset * 16000 - round(offset * 16000)) < 1e-3


def test_stop_finishes_the_windows_in_hand_and_closes():
    quick = FakeModel("quick", "quick", ("a", "b"))  # 0.25 s windows
    src = FileSource(CLIP, realtime=True, loop=True)
    sink = MemorySink()
    d = Daemon(src, build_runners(settings([quick]), [quick]), sink, device="dev", stats_interval=60)
    threading.Timer(1.0, d.stop).start()
    t0 = time.monotonic()
    d.run()
    assert time.monotonic() - t0 < 3.5
    assert sink.closed and len(sink.results) >= 2


def test_the_supervising_thread_sleeps_until_a_stop_not_every_tenth_of_a_second(monkeypatch):
    """2 s of real-time serving, then a stop: the main thread wakes for the stop and the consumer's end only."""
    from edgekd.stopping import Wakeup

    waits: list[float | None] = []
    real_wait = Wakeup.wait
    monkeypatch.setattr(Wakeup, "wait", lambda self, timeout: (waits.append(timeout), real_wait(self, timeout))[1])
    quick = FakeModel("quick", "quick", ("a", "b"))
    sink = MemorySink()
    d = Daemon(FileSource(CLIP, realtime=True, loop=True), build_runners(settings([quick]), [quick]), sink, device="dev")
    threading.Timer(2.0, d.stop).start()
    d.run()
    assert sink.closed and len(sink.results) >= 4
    assert waits[0] is None  # serving: no timeout at all
    assert len(waits) <= 3, waits  # then the stop (until the drain deadline), and the consumer's end


def test_a_stop_from_a_signal_handler_wakes_the_supervisor(monkeypatch):
    """The handler runs in the main thread, inside the supervisor's wait: its wake must end that wait."""
    import os
    import signal

    from edgekd.signals import StopSignals

    quick = FakeModel("quick", "quick", ("a", "b"))
    sink = MemorySink()
    d = Daemon(FileSource(CLIP, realtime=True, loop=True), build_runners(settings([quick]), [quick]), sink, device="dev",
               stop_timeout=5.0)  # fmt: skip
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    t0 = time.monotonic()
    with StopSignals() as signals:
        signals.attach(d)
        d.run()
    assert signals.received == ["SIGTERM"] and sink.closed
    assert time.monotonic() - t0 < 4.0  # the buffered audio is drained at once, long before the 5 s bound


class BrokenSource:
    rate = 16000
    description = "broken mic"

    def run(self, ring, stop):
        raise AudioError("broken mic: cannot open it")


def test_a_failing_source_is_raised_after_closing_the_sink(energy):
    sink = MemorySink()
    d = Daemon(BrokenSource(), build_runners(settings([energy]), [energy]), sink, device="dev")
    with pytest.raises(AudioError, match="broken mic"):
        d.run()
    assert sink.closed and sink.stats[-1].source_state == "failed"


def test_stats_are_published_every_interval():
    slow = FakeModel("slow", "slow", ("a", "b"), delay=0.02)  # ~30 windows: about 0.6 s
    sink = MemorySink()
    d = Daemon(FileSource(CLIP), build_runners(settings([slow]), [slow]), sink, device="dev", stats_interval=0.1)
    d.run()
    assert len(sink.stats) >= 4
    assert all(m.windows_per_s >= 0 for st in sink.stats for m in st.models)
