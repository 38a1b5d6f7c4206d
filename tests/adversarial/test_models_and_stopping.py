"""Hostile models and hostile stops, as a new user would meet them.

Models that onnxruntime loads but that fail later (a Reshape valid for some lengths only, a Gather
whose index follows the audio, an output whose size changes) must be refused at load with the
input that broke them named, or, if they fail only on audio the load probe does not try, have
their failing windows counted and reported while the stream and the other models go on.

Stops: SIGTERM, SIGINT and SIGHUP end a real `edgekd serve` within its stop bound even with a
slow model and a full buffer; results classified before the signal still arrive; a second
signal stops at once. Every case checks the message (names the thing and the fix), the exit
status, and that no traceback is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from edgekd.audio.ringbuffer import RingBuffer
from edgekd.audio.sources import FileSource
from edgekd.config import ConfigError, load_settings
from edgekd.daemon import Daemon, build_runners
from edgekd.failures import FAILURES_TO_STOP
from edgekd.model import Model, ModelRunError
from edgekd.signals import StopSignals, StoppedBeforeServing
from edgekd.sink import MemorySink
from hostile_onnx import (
    band_model,
    growing_output_model,
    length_output_model,
    reshape_model,
    slow_model,
    unrunnable_model,
)
from onnx_models import energy_model

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
BAND = (0.2, 0.25)  # mean |x| that the run-time hostile models fail on; no load-probe window has it
IN_BAND = 0.22  # a square wave of this amplitude has mean |x| = 0.22
WAIT_S = 120.0  # the longest any wait here may take (a loaded CI machine), never the expected time
EXIT_MARGIN_S = 5.0  # process exit after the stop bound: interpreter teardown on a busy machine


# ---------------------------------------------------------------------------------------------
# helpers


def square(seconds: float, amplitude: float) -> np.ndarray:
    n = int(seconds * RATE)
    return np.where(np.arange(n) % 2 == 0, amplitude, -amplitude).astype(np.float32)


def quiet_tone(seconds: float) -> np.ndarray:
    return (0.05 * np.sin(np.arange(int(seconds * RATE)) * 0.1)).astype(np.float32)


def wav(path: Path, *parts: np.ndarray) -> Path:
    sf.write(path, np.concatenate(parts), RATE)
    return path


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "[ONNXRuntimeError]" not in text, text  # onnxruntime's raw lines are translated, not echoed


def edgekd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgekd", *args]


def run_edgekd(*args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(edgekd_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def settings_for(models, **kw):
    return load_settings(overrides={"models": [{"path": str(m.path)} for m in models], **kw}, environ={})


def serve_file(models, path: Path, **kw) -> tuple[Daemon, MemorySink]:
    sink = MemorySink()
    d = Daemon(FileSource(path), build_runners(settings_for(models, **kw), models), sink, device="dev", stats_interval=60)
    d.run()
    return d, sink


def stats_of(sink: MemorySink, name: str):
    return next(m for m in sink.stats[-1].models if m.model == name)


@pytest.fixture
def energy(tmp_path) -> Model:
    return Model(energy_model(tmp_path / "energy.onnx"))


@pytest.fixture
def band(tmp_path) -> Model:
    return Model(band_model(tmp_path / "band.onnx", *BAND))


# ---------------------------------------------------------------------------------------------
# the load probe: models that cannot run on every window are refused at load, naming the window

LOAD_FAILURES = {
    "reshape valid only for some lengths": (lambda p: reshape_model(p, frame=7), "silence", "Reshape"),
    "gather that always leaves its table": (lambda p: unrunnable_model(p), "silence", "Gather"),
    "output length follows the input length": (lambda p: length_output_model(p), "silence", "shape (1, 3)"),
    "gather failing on a tone": (lambda p: band_model(p, 0.30, 0.33), "440 Hz tone", "Gather"),
    "gather failing on loud noise": (lambda p: band_model(p, 0.38, 0.42), "loud noise", "Gather"),
    "output grows on clipping": (lambda p: growing_output_model(p, 0.99, 1.01), "full-scale square wave", "shape (1, 3)"),
    "output grows on a DC offset": (lambda p: growing_output_model(p, 0.45, 0.55), "DC offset", "shape (1, 3)"),
    "gather failing on faint noise": (lambda p: band_model(p, 0.0005, 0.0012), "faint noise", "Gather"),
}


@pytest.mark.parametrize("case", LOAD_FAILURES, ids=list(LOAD_FAILURES))
def test_info_refuses_a_model_that_cannot_run_on_every_window(case, tmp_path, capsys, monkeypatch):
    build, window, what = LOAD_FAILURES[case]
    path = build(tmp_path / "hostile.onnx")
    from edgekd import cli

    monkeypatch.setattr(sys, "argv", ["edgekd", "info", str(path)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"edgekd: model {path}: fails on a test window of") and window in err and what in err, err
    assert "re-export the graph" in err and "edgekd info" in err  # the fix
    assert err.count("\n") == 1  # one line
    no_traceback(err)


@pytest.mark.parametrize("command", ["serve", "classify", "bench"])
def test_every_command_refuses_it_at_load_with_one_line(command, tmp_path):
    model = reshape_model(tmp_path / "reshape-7.onnx")
    clip = wav(tmp_path / "clip.wav", quiet_tone(2.0))
    args = {
        "serve": ("serve", "--stdout", "--source", str(clip), "-m", str(model)),
        "classify": ("classify", str(clip), "-m", str(model)),
        "bench": ("bench", str(model), "--seconds", "0.1", "--no-memory", "--no-peak", "-q"),
    }[command]
    res = run_edgekd(*args)
    assert res.returncode == 2, res.stderr
    assert f"model {model}: fails on a test window of silence" in res.stderr and "Reshape" in res.stderr
    assert "re-export the graph" in res.stderr
    assert res.stdout == ""
    no_traceback(res.stderr)


def test_a_node_name_with_terminal_escapes_is_shown_escaped(tmp_path):
    path = unrunnable_model(tmp_path / "escape.onnx", node_name="pick\x1b[2J\x1b[31mrow\x07")
    res = run_edgekd("info", str(path))
    assert res.returncode == 2
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr
    assert "Gather node 'pick\\x1b[2J\\x1b[31mrow\\x07' failed" in res.stderr, res.stderr
    no_traceback(res.stderr)


def test_a_model_that_runs_everywhere_passes_the_probe_unchanged(energy):
    loud = energy.scores(square(1.0, 0.5)[None, :])
    assert loud.shape == (1, 2) and energy.meta.labels[int(loud.argmax())] == "loud"


# ---------------------------------------------------------------------------------------------
# run-time failures: counted and reported, never a crash; the other models go on


def test_a_window_that_fails_is_counted_and_the_stream_goes_on(band, energy, tmp_path, caplog):
    clip = wav(tmp_path / "band.wav", quiet_tone(2.0), square(3.0, IN_BAND), quiet_tone(2.0))
    d, sink = serve_file([band, energy], clip, defaults={"gate_db": "off"})
    b, e = stats_of(sink, "band-fail"), stats_of(sink, "energy-test")
    assert b.failed > 0 and b.state == "running" and b.windows > 0  # fewer than FAILURES_TO_STOP in a row
    assert "Gather node failed" in b.error
    assert e.failed == 0 and e.windows == b.windows + b.failed  # every window of the healthy model classified
    band_results = [r for r in sink.results if r.model == "band-fail"]
    assert len(band_results) == b.published and [r.seq for r in band_results] == list(range(b.published))
    assert d.source_state == "ended" and sink.closed


def test_a_model_that_keeps_failing_is_stopped_and_named_while_the_others_go_on(band, energy, tmp_path, caplog):
    clip = wav(tmp_path / "all-band.wav", square(12.0, IN_BAND))
    _, sink = serve_file([band, energy], clip, defaults={"gate_db": "off"})
    b, e = stats_of(sink, "band-fail"), stats_of(sink, "energy-test")
    assert b.state == "failed" and b.failed == FAILURES_TO_STOP and b.windows == 0
    assert e.state == "running" and e.windows == 45 and e.published == 45
    stops = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(stops) == 1 and "model band-fail stopped after 10 failed windows in a row" in stops[0]
    assert "remove it from the config" in stops[0] and "the other models go on" in stops[0]


def test_when_every_model_failed_serve_ends_with_the_reason(band, tmp_path):
    clip = wav(tmp_path / "all-band.wav", square(12.0, IN_BAND))
    sink = MemorySink()
    d = Daemon(FileSource(clip), build_runners(settings_for([band], defaults={"gate_db": "off"}), [band]), sink,
               device="dev", stats_interval=60)
    with pytest.raises(ModelRunError, match="no model is left to run") as err:
        d.run()
    assert str(band.path) in str(err.value) and "Gather node failed" in str(err.value)
    assert "remove it from the config" in str(err.value)
    assert sink.closed and sink.stats[-1].models[0].state == "failed"


def test_serve_cli_when_every_model_failed_exits_2_with_one_line(tmp_path):
    model = band_model(tmp_path / "band.onnx", *BAND)
    clip = wav(tmp_path / "all-band.wav", square(12.0, IN_BAND))
    res = run_edgekd("serve", "--stdout", "--source", str(clip), "-m", str(model), "--gate-db", "off")
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"edgekd: model {model}: stopped after failing 10 windows in a row"), res.stderr
    assert "remove it from the config" in last
    no_traceback(res.stderr)


def test_an_output_that_changes_size_mid_stream_is_a_counted_failure(tmp_path, energy):
    grows = Model(growing_output_model(tmp_path / "grows.onnx", *BAND))
    clip = wav(tmp_path / "band.wav", quiet_tone(2.0), square(2.5, IN_BAND), quiet_tone(2.0))
    _, sink = serve_file([grows, energy], clip, defaults={"gate_db": "off"})
    g = stats_of(sink, "grows")
    assert g.failed > 0 and g.state == "running"
    assert "has shape (1, 3) for this window, but 2 labels need (1, 2)" in g.error
    assert all(set(r.scores) == {"quiet", "loud"} for r in sink.results)


def test_failure_warnings_are_rate_limited(band, tmp_path, caplog):
    # failing stretches shorter than FAILURES_TO_STOP windows, again and again: never stopped
    parts = [p for _ in range(6) for p in (square(2.25, IN_BAND), quiet_tone(2.0))]
    clip = wav(tmp_path / "on-off.wav", *parts)
    _, sink = serve_file([band], clip, defaults={"gate_db": "off"})
    b = stats_of(sink, "band-fail")
    assert b.state == "running" and b.failed >= 30
    warnings = [r for r in caplog.records if r.name == "edgekd.failures" and r.levelname == "WARNING"]
    assert 1 <= len(warnings) <= 2, [w.getMessage() for w in warnings]
    assert "model band-fail: a window failed" in warnings[0].getMessage()


def test_stats_with_failures_match_the_published_schema(band, tmp_path):
    clip = wav(tmp_path / "all-band.wav", square(12.0, IN_BAND))
    sink = MemorySink()
    d = Daemon(FileSource(clip), build_runners(settings_for([band], defaults={"gate_db": "off"}), [band]), sink,
               device="dev", stats_interval=60)
    with pytest.raises(ModelRunError):
        d.run()
    schema = json.loads((ROOT / "docs" / "schemas" / "v1" / "stats.schema.json").read_text())
    payload = json.loads(sink.stats[-1].to_json())
    jsonschema.validate(payload, schema)
    assert payload["models"][0]["state"] == "failed" and payload["models"][0]["failed"] == FAILURES_TO_STOP


def test_classify_reports_failed_windows_per_file_and_goes_on(tmp_path):
    model = band_model(tmp_path / "band.onnx", *BAND)
    other = energy_model(tmp_path / "energy.onnx")
    mixed = wav(tmp_path / "mixed.wav", quiet_tone(2.0), square(3.0, IN_BAND), quiet_tone(2.0))
    bad = wav(tmp_path / "all-band.wav", square(4.0, IN_BAND))
    fine = wav(tmp_path / "fine.wav", quiet_tone(3.0))
    res = run_edgekd("classify", str(mixed), str(bad), str(fine), "-m", str(model), "-m", str(other),
                     "--gate-db", "off", "--json")
    assert res.returncode == 1  # something failed: not a clean run
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 6  # every file, every model
    by = {(Path(x["file"]).name, x["model"]): x for x in lines}
    assert by["mixed.wav", "band-fail"]["failed"] == 9 and by["mixed.wav", "band-fail"]["label"] is not None
    assert by["all-band.wav", "band-fail"]["label"] is None and by["all-band.wav", "band-fail"]["failed"] == 13
    assert "failed" not in by["fine.wav", "band-fail"] and by["all-band.wav", "energy-test"]["windows"] == 13
    err = res.stderr.strip().splitlines()
    assert err == [
        f"{mixed}: model band-fail failed on 9 of 25 windows (inference failed: Gather node failed: indices element "
        "out of data bounds, idx=1000 must be within the inclusive range [-1,0]); check the model with `edgekd info`",
        f"{bad}: model band-fail failed on 13 of 13 windows (inference failed: Gather node failed: indices element "
        "out of data bounds, idx=1000 must be within the inclusive range [-1,0]); check the model with `edgekd info`",
    ]
    no_traceback(res.stderr)


def test_classify_table_says_when_every_window_failed(tmp_path):
    model = band_model(tmp_path / "band.onnx", *BAND)
    bad = wav(tmp_path / "all-band.wav", square(2.0, IN_BAND))
    res = run_edgekd("classify", str(bad), "-m", str(model), "--gate-db", "off")
    assert res.returncode == 1
    assert res.stdout == f"{bad}\tbandfail\t(all windows failed)\t0.000\n"
    no_traceback(res.stderr)


def test_prometheus_counts_failed_windows_and_stopped_models(band, energy, tmp_path):
    pytest.importorskip("prometheus_client")
    from edgekd.metrics import Metrics

    clip = wav(tmp_path / "all-band.wav", square(12.0, IN_BAND))
    d, sink = serve_file([band, energy], clip, defaults={"gate_db": "off"})
    m = Metrics()
    m.attach(d, sink)
    text = _scrape(m)
    assert 'edgekd_windows_failed_total{model="band-fail",task="bandfail"} 10.0' in text
    assert 'edgekd_model_running{model="band-fail",task="bandfail"} 0.0' in text
    assert 'edgekd_model_running{model="energy-test",task="loudness"} 1.0' in text


def _scrape(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


# ---------------------------------------------------------------------------------------------
# stopping, in process: the bound, what is counted, and the end of a file


def test_stop_with_a_slow_model_returns_within_the_bound_and_counts_what_it_dropped(tmp_path, energy):
    slow = Model(slow_model(tmp_path / "slow.onnx", iterations=300, band=BAND))
    clip = wav(tmp_path / "long.wav", square(60.0, IN_BAND))
    sink = MemorySink()
    d = Daemon(FileSource(clip), build_runners(settings_for([slow, energy], defaults={"gate_db": "off"}), [slow, energy]),
               sink, device="dev", stats_interval=60, stop_timeout=2.0)
    stopped_at: list[float] = []
    runner = threading.Thread(target=d.run)
    runner.start()
    deadline = time.monotonic() + WAIT_S
    while not any(r.model == "slow" for r in sink.results) and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped_at.append(time.monotonic())
    d.stop()
    runner.join(WAIT_S)
    took = time.monotonic() - stopped_at[0]
    assert not runner.is_alive() and took < 2.0 + EXIT_MARGIN_S, took
    final = sink.stats[-1]
    assert final.dropped_at_stop_samples > 0 and sink.closed
    assert final.audio_seconds * RATE >= final.dropped_at_stop_samples
    for name in ("slow", "energy-test"):
        s = stats_of(sink, name)
        assert s.published == len([r for r in sink.results if r.model == name])  # every result classified reached the sink


def test_the_end_of_a_file_still_classifies_every_window(tmp_path):
    slow = Model(slow_model(tmp_path / "slow.onnx", iterations=60, band=BAND))
    clip = wav(tmp_path / "short.wav", square(3.0, IN_BAND))
    _, sink = serve_file([slow], clip, defaults={"gate_db": "off"})
    s = stats_of(sink, "slow")
    assert s.windows == 9 and s.abandoned == 0 and sink.stats[-1].dropped_at_stop_samples == 0


def test_a_forced_stop_cancels_the_inference_in_progress(tmp_path):
    # one window takes far longer than the bound: only cancelling it ends the stop in time
    slow = Model(slow_model(tmp_path / "very-slow.onnx", iterations=20000, band=BAND))
    clip = wav(tmp_path / "long.wav", square(10.0, IN_BAND))
    sink = MemorySink()
    d = Daemon(FileSource(clip), build_runners(settings_for([slow], defaults={"gate_db": "off"}), [slow]), sink,
               device="dev", stats_interval=60, stop_timeout=1.0)
    entered = threading.Event()
    real_scores = slow.scores

    def scores(windows):  # the real model, and a flag once its first window has begun
        entered.set()
        return real_scores(windows)

    slow.scores = scores
    runner = threading.Thread(target=d.run)
    runner.start()
    assert entered.wait(WAIT_S)
    time.sleep(0.2)  # well inside a window that takes tens of seconds
    t = time.monotonic()
    d.force_stop()
    runner.join(WAIT_S)
    assert not runner.is_alive() and time.monotonic() - t < EXIT_MARGIN_S
    s = stats_of(sink, "slow")
    assert s.abandoned >= 1 and s.windows == 0 and s.failed == 0  # cancelled: neither classified nor a failure
    assert sink.stats[-1].dropped_at_stop_samples > 0 and sink.closed


def test_ring_buffer_discard_counts_real_samples_only():
    ring = RingBuffer(100)
    ring.write(np.ones(30, np.float32))
    ring.skip(20)  # capture was down: these never came
    ring.write(np.ones(10, np.float32))
    assert ring.discard() == 40 and ring.available() == 0
    ring.write(np.ones(150, np.float32))  # overrun: only the newest 100 are still there
    assert ring.discard() == 100


def test_stop_timeout_is_checked_like_any_setting(monkeypatch):
    with pytest.raises(ConfigError, match="stop_timeout: Input should be greater than or equal to 1"):
        load_settings(overrides={"stop_timeout": 0}, environ={})
    assert load_settings(environ={"EDGEKD_STOP_TIMEOUT": "12"}).stop_timeout == 12.0
    assert load_settings(environ={}).stop_timeout == 5.0


@pytest.mark.parametrize("unit", ["edgekd.service", "edgekd@.service"])
def test_the_default_stop_bound_fits_the_units_stop_timeout(unit):
    text = (ROOT / "systemd" / unit).read_text()
    found = re.search(r"^TimeoutStopSec=(\d+)s?$", text, re.M)
    assert found, f"{unit} sets no TimeoutStopSec"
    assert int(found.group(1)) >= load_settings(environ={}).stop_timeout + EXIT_MARGIN_S


def test_a_signal_before_serving_began_stops_cleanly_not_by_default_action():
    daemon_calls: list[str] = []

    class FakeDaemon:
        stop_timeout = 5.0

        def stop(self):
            daemon_calls.append("stop")

        def force_stop(self):
            daemon_calls.append("force")

    before = signal.getsignal(signal.SIGHUP)
    with StopSignals() as signals:
        with pytest.raises(StoppedBeforeServing, match="SIGHUP before serving began"):
            signal.raise_signal(signal.SIGHUP)
            time.sleep(0.01)
        signals.received.clear()
        signals.attach(FakeDaemon())
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert daemon_calls == ["stop", "force"]
    assert signal.getsignal(signal.SIGHUP) == before  # handlers restored


# ---------------------------------------------------------------------------------------------
# stopping a real `edgekd serve`


class Serving:
    """`edgekd serve --stdout` in the background: results on stdout, the log on stderr."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out_path, self.err_path = tmp_path / "stdout.jsonl", tmp_path / "stderr.txt"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen(edgekd_cmd("serve", *args), stdout=self._out, stderr=self._err, cwd=ROOT)

    def stderr(self) -> str:
        return self.err_path.read_text()

    def results(self) -> list[dict]:
        return [json.loads(x) for x in self.out_path.read_text().splitlines() if x.endswith("}")]

    def wait_results(self, n: int) -> list[dict]:
        deadline = time.monotonic() + WAIT_S
        while len(self.results()) < n and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        got = self.results()
        assert len(got) >= n, self.stderr()
        return got

    def signal(self, sig: signal.Signals) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait(self) -> int:
        try:
            return self.proc.wait(WAIT_S)
        finally:
            self._out.close()
            self._err.close()
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def slow_setup(tmp_path) -> tuple[Path, Path]:
    """A model at ~0.3-0.5 s a window (hop 0.25 s: it cannot keep up) and a minute of audio it is slow on."""
    model = slow_model(tmp_path / "slow.onnx", iterations=300, band=BAND)
    clip = wav(tmp_path / "minute.wav", square(60.0, IN_BAND))
    return model, clip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_ends_serve_within_the_bound_and_keeps_what_was_classified(sig, slow_setup, tmp_path):
    model, clip = slow_setup
    serving = Serving(tmp_path, "--stdout", "--source", str(clip), "-m", str(model), "--gate-db", "off",
                      "--stop-timeout", "3")
    before = serving.wait_results(2)
    sent = serving.signal(sig)
    code = serving.wait()
    took = time.monotonic() - sent
    err = serving.stderr()
    assert code == 0, err
    assert took < 3 + EXIT_MARGIN_S, f"{took:.1f} s: {err}"  # draining the buffer would take over 15 s
    assert f"{sig.name}: stopping within 3 s" in err
    assert re.search(r"stop: \d+\.\d s of captured audio not classified.*raise stop_timeout", err), err
    after = serving.results()
    assert after[: len(before)] == before  # nothing already classified is lost
    assert [r["seq"] for r in after] == list(range(len(after)))
    if sig == signal.SIGHUP:
        assert "does not reload its config on SIGHUP" in err
    no_traceback(err)


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_with_status_130(slow_setup, tmp_path):
    model, clip = slow_setup
    serving = Serving(tmp_path, "--stdout", "--source", str(clip), "-m", str(model), "--gate-db", "off",
                      "--stop-timeout", "60")
    before = serving.wait_results(1)
    serving.signal(signal.SIGINT)
    deadline = time.monotonic() + WAIT_S
    while "SIGINT: stopping within 60 s" not in serving.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = serving.signal(signal.SIGINT)
    code = serving.wait()
    err = serving.stderr()
    assert code == 130, err
    assert time.monotonic() - sent < EXIT_MARGIN_S, err  # not the 60 s bound
    assert "SIGINT again: stopping now" in err and "forced stop (a second signal)" in err
    assert serving.results()[: len(before)] == before
    no_traceback(err)


def _catches(pid: int, sig: signal.Signals) -> bool:
    """The process has a handler for `sig` (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(caught >> (int(sig) - 1) & 1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the signal mask from /proc")
def test_sighup_while_the_models_load_stops_cleanly(tmp_path):
    # every window slow: the load probe alone takes seconds, and the signal comes in the middle of it
    model = slow_model(tmp_path / "slow-load.onnx", iterations=400)
    clip = wav(tmp_path / "clip.wav", square(5.0, IN_BAND))
    serving = Serving(tmp_path, "--stdout", "--source", str(clip), "-m", str(model), "--gate-db", "off")
    deadline = time.monotonic() + WAIT_S
    while not _catches(serving.proc.pid, signal.SIGHUP) and serving.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    sent = serving.signal(signal.SIGHUP)
    code = serving.wait()
    err = serving.stderr()
    assert code == 0, err  # not killed by the signal (that would be -1)
    assert "stopped by SIGHUP before serving began" in err and "does not reload" in err
    assert "serving file" not in err and serving.results() == []
    assert time.monotonic() - sent < EXIT_MARGIN_S
    no_traceback(err)


# --- with a real broker: results classified before SIGTERM reach it, and the final stats say what was dropped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broker(tmp_path):
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        pytest.fail("mosquitto is not installed: apt-get install mosquitto mosquitto-clients", pytrace=False)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_with_a_broker_delivers_every_result_and_reports_the_drop(slow_setup, broker, tmp_path):
    model, clip = slow_setup
    sub_out = tmp_path / "sub.txt"
    with open(sub_out, "w") as fh:
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker), "-t", "edgekd/#", "-F", "%r\t%t\t%p", "-d"],
            stdout=fh, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while "SUBACK" not in sub_out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        err_path = tmp_path / "serve.txt"
        with open(err_path, "w") as err_fh:
            serve = subprocess.Popen(
                edgekd_cmd("serve", "--source", str(clip), "-m", str(model), "--gate-db", "off", "--broker",
                           f"mqtt://127.0.0.1:{broker}", "--device-id", "bench1", "--stats-interval", "60"),
                stdout=subprocess.DEVNULL, stderr=err_fh, cwd=ROOT,
            )
            deadline = time.monotonic() + WAIT_S
            while "edgekd/bench1/slow" not in sub_out.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            sent = time.monotonic()
            serve.send_signal(signal.SIGTERM)
            code = serve.wait(WAIT_S)
            took = time.monotonic() - sent
        time.sleep(1.0)  # mosquitto_sub prints what the broker already sent
        sub.terminate()
        sub.wait(10)
    err = err_path.read_text()
    assert code == 0 and took < 5 + EXIT_MARGIN_S, f"{took:.1f} s: {err}"
    lines = [x.split("\t", 2) for x in sub_out.read_text().splitlines() if x[:2] in ("0\t", "1\t")]
    results = [json.loads(p) for _, t, p in lines if t == "edgekd/bench1/slow"]
    stats = [json.loads(p) for _, t, p in lines if t == "edgekd/bench1/stats"]
    status = [p for _, t, p in lines if t == "edgekd/bench1/status"]
    assert stats, err
    final = stats[-1]
    published = final["models"][0]["published"]
    assert published >= 1 and sorted(r["seq"] for r in results) == list(range(published))  # every one arrived
    assert final["dropped_at_stop_samples"] > 0
    assert status[-1] == "offline"
    no_traceback(err)
