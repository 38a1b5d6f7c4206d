"""`edgekd serve`: a capture thread fills the ring buffer; a consumer thread runs the pipeline.

Capture only writes. The consumer blocks on the ring buffer's condition (never spins), feeds the
pipeline, and publishes stats every `stats_interval` seconds. The thread that called `run()` only
supervises (so that signal handlers run at once, even while a slow model is busy).

At the end of a file every window is classified. On `stop()` (SIGTERM, SIGINT, SIGHUP) capture
stops and the consumer classifies the buffered audio for at most `stop_timeout` minus the time
kept for closing the sink; then the inference in progress is cancelled, and what is left is
dropped and counted (`dropped_at_stop_samples`, per model `abandoned`). The sink is closed (it
publishes `offline`) within what remains, so the whole stop takes at most `stop_timeout`.
`force_stop()` (a second signal) skips the draining.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from edgekd.audio.decode import AudioError
from edgekd.audio.ringbuffer import RingBuffer
from edgekd.audio.sources import Source
from edgekd import operating_point
from edgekd.config import ConfigError, ModelSettings, Settings
from edgekd.payloads import StatsPayload
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec, Scorer, attach_gates
from edgekd.sdnotify import SystemdNotifier
from edgekd.stopping import StopBound, Wakeup
from edgekd.sink import ResultSink
from edgekd.stats import ProcessMeter

log = logging.getLogger(__name__)

READ_CHUNK_SECONDS = 1.0  # the consumer's scratch buffer; one capture write is far smaller
IDLE_WAKE_S = 0.5  # longest the consumer sleeps without audio (to notice stop and stats)
CAPTURE_STOP_GRACE_S = 2.0  # a source that ignores stop (stdin blocked in read) is left behind
DROP_LOG_INTERVAL_S = 10.0  # rate limit for "consumer fell behind" warnings
CANCEL_WAIT_S = 0.5  # for the consumer to notice a cancel (a node that ignores cancel is left behind)


def runner_spec(settings: Settings, ms: ModelSettings, model: Scorer) -> RunnerSpec:
    """How one model runs: its operating point under the config and flags (edgekd.operating_point)."""
    meta = model.meta
    stem = ms.path.rsplit("/", 1)[-1].removesuffix(".onnx")
    keys = (meta.name, meta.task, stem)
    unknown = sorted(set(ms.thresholds) - set(meta.labels))
    if unknown:
        raise ConfigError(f"config: models thresholds for {meta.name}: unknown labels {unknown} (labels: {list(meta.labels)})")
    table_hop = next((settings.hops[k] for k in keys if k in settings.hops), None)
    resolved = operating_point.resolve(settings, ms, meta, hop_override_s=table_hop)
    if resolved.hop_s * meta.sample_rate > meta.window_samples:
        raise ConfigError(
            f"config: hop {resolved.hop_s:g} s for model {meta.name} is longer than its window ({meta.window_seconds:g} s), "
            f"so the audio between its windows would never be classified; use a hop of at most {meta.window_seconds:g} s "
            f"(e.g. --hop {meta.name}={meta.window_seconds / 4:g})"
        )
    gate = ms.gate or next((settings.gates[k] for k in keys if k in settings.gates), None)
    return RunnerSpec(
        hop_samples=max(1, int(round(resolved.hop_s * meta.sample_rate))),
        post=resolved.post,
        gate_db=operating_point.gate_db(settings, ms),
        gate=gate,
    )


def build_runners(settings: Settings, models: Sequence[Scorer]) -> list[ModelRunner]:
    """One runner per model, in the order of settings.models; checks hop and gate keys."""
    specs = [runner_spec(settings, ms, m) for ms, m in zip(settings.models, models)]
    runners = [ModelRunner(m, s) for m, s in zip(models, specs)]
    known = {n for r in runners for n in r.names()} | {
        ms.path.rsplit("/", 1)[-1].removesuffix(".onnx") for ms in settings.models
    }
    for table in ("hops", "gates"):
        for key in getattr(settings, table):
            if key not in known:
                raise ConfigError(f"config: {table}.{key}: no model has that name or task (models: {sorted(known)})")
    try:
        attach_gates(runners)
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    return runners


class Daemon:
    def __init__(
        self,
        source: Source,
        runners: Sequence[ModelRunner],
        sink: ResultSink,
        device: str,
        stats_interval: float = 10.0,
        buffer_seconds: float = 10.0,
        notifier: SystemdNotifier | None = None,
        stop_timeout: float | None = None,  # default: edgekd.config.DEFAULT_STOP_TIMEOUT_S
    ) -> None:
        self.source = source
        self.runners = list(runners)
        self.sink = sink
        self.device = device
        self.stats_interval = stats_interval
        self.ring = RingBuffer(max(1, int(source.rate * buffer_seconds)))
        self.stop_event = threading.Event()  # set by signal handlers: stop capture
        self.source_state = "running"
        self.source_error: BaseException | None = None
        self._meter = ProcessMeter()
        self._started = time.monotonic()
        self.pipeline: Pipeline | None = None
        self._last_drop_log = -DROP_LOG_INTERVAL_S
        self.notifier = notifier or SystemdNotifier()
        self._ready_sent = False
        self.bound = StopBound() if stop_timeout is None else StopBound(stop_timeout)
        self.dropped_at_stop = 0  # captured samples never classified because the stop bound ran out
        self.models_failed = False  # every model was stopped for failing
        self._consumer_error: BaseException | None = None
        self._wake = Wakeup()  # the supervising thread sleeps on it: a stop, or the consumer's end
        self._consumer_ended = False

    @property
    def stop_timeout(self) -> float:
        return self.bound.timeout_s

    @property
    def forced(self) -> bool:
        return self.bound.forced

    def stop(self) -> None:
        """Stop capture and finish within `stop_timeout` (safe from a signal handler or another thread)."""
        self.bound.request()
        self.stop_event.set()
        self._wake.set()

    def force_stop(self) -> None:
        """Stop now: cancel the inference in progress and drop the buffered audio."""
        self.bound.force()
        self.stop_event.set()
        if self.pipeline is not None:
            self.pipeline.abandon()
        self._wake.set()

    def stop_time_left(self) -> float | None:
        """Seconds left of the stop bound (for clean-ups after run()); None when no stop was asked for."""
        return self.bound.time_left()

    def _capture(self) -> None:
        try:
            self.source.run(self.ring, self.stop_event)
            self.source_state = "ended"
        except AudioError as exc:
            self.source_state, self.source_error = "failed", exc
        except Exception as exc:  # a driver error: report it, do not hide it
            log.exception("capture from %s failed", self.source.description)
            self.source_state, self.source_error = "failed", exc
        finally:
            self.ring.close()

    def run(self) -> None:
        """Serve until the source ends or `stop()`; raises the source's AudioError if it failed.

        Raises ModelRunError if every model was stopped for failing."""
        t0 = datetime.now(timezone.utc)
        # a sink with an outbox gives run ids that stay unique across restarts (result ids use them)
        run_id = getattr(self.sink, "run_id", None)
        self.pipeline = Pipeline(
            self.runners, self.source.rate, self.sink, self.device, t0=t0, run_id=run_id, source_name=self.source.description
        )
        capture = threading.Thread(target=self._capture, name="edgekd-capture", daemon=True)
        consumer = threading.Thread(target=self._consume_or_record, name="edgekd-consumer", daemon=True)
        log.info(
            "serving %s with %s",
            self.source.description,
            ", ".join(f"{r.meta.name} ({r.meta.task}, window {r.meta.window_seconds:g}s, hop {r.hop_seconds:g}s)" for r in self.runners),
        )
        capture.start()
        consumer.start()
        try:
            self._supervise(consumer)
        finally:
            if consumer.is_alive():  # the supervisor itself was interrupted: the sink must not be used after close
                self.pipeline.abandon()
                consumer.join(timeout=CANCEL_WAIT_S)
            self.notifier.stopping("finishing the windows in hand")
            self.stop_event.set()
            capture.join(timeout=min(CAPTURE_STOP_GRACE_S, self.bound.drain_left()))
            self._report_stop()
            self.publish_stats()
            self.sink.close(timeout=self.bound.close_timeout())
            self.notifier.close()
            self._wake.close()
        if self._consumer_error is not None:
            raise self._consumer_error
        if self.models_failed:
            raise self.pipeline.all_failed_error()
        if self.source_error is not None:
            if isinstance(self.source_error, AudioError):
                raise self.source_error
            raise AudioError(f"{self.source.description}: capture failed ({self.source_error})")

    def _supervise(self, consumer: threading.Thread) -> None:
        """Wait for the consumer; past the stop bound, make it give up. Signals are handled here.

        It sleeps until the consumer ends or a stop is asked for (both set `_wake`), then until the
        drain deadline: no periodic wake-ups while serving."""
        assert self.pipeline is not None
        while not self._consumer_ended:
            left = self.bound.drain_left()
            if self.bound.requested and left <= 0:
                self.pipeline.abandon()
                consumer.join(timeout=CANCEL_WAIT_S)
                if consumer.is_alive():
                    log.warning("a model did not stop on cancel; closing without waiting for it")
                return
            self._wake.wait(None if math.isinf(left) else left)
        consumer.join()  # it has returned from its work: only the thread's own end is left

    def _report_stop(self) -> None:
        if self.models_failed:
            return  # run() raises the reason
        abandoned = {r.meta.name: r.counters.abandoned for r in self.runners if r.counters.abandoned}
        if not (self.dropped_at_stop or abandoned):
            return
        lost = f"{self.dropped_at_stop / self.source.rate:.1f} s of captured audio not classified" + "".join(
            f", {n} window(s) of {m} abandoned" for m, n in abandoned.items()
        )
        if self.forced:
            log.warning("forced stop (a second signal): %s", lost)
        else:
            log.warning(
                "stop: %s, to stop within stop_timeout=%g s (raise stop_timeout to finish more; keep it under the "
                "service's TimeoutStopSec)", lost, self.stop_timeout,
            )

    def _consume_or_record(self) -> None:
        try:
            self._consume()
        except BaseException as exc:  # re-raised by run() on the caller's thread
            self._consumer_error = exc
            self.stop_event.set()
        finally:
            self._consumer_ended = True
            self._wake.set()  # the supervisor: the consumer has ended

    def _consume(self) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        buf = np.empty(max(1, int(self.source.rate * READ_CHUNK_SECONDS)), dtype=np.float32)
        next_stats = time.monotonic() + self.stats_interval
        stop_seen: float | None = None
        while True:
            now = time.monotonic()
            if self.stop_event.is_set() and stop_seen is None:
                stop_seen = now
            if stop_seen is not None and not self.ring.closed and now - stop_seen > CAPTURE_STOP_GRACE_S:
                log.warning("%s did not stop in %.0fs; finishing without it", self.source.description, CAPTURE_STOP_GRACE_S)
                self.ring.close()
            if pipeline.abandoned:
                self.dropped_at_stop += self.ring.discard()
                return
            # sleep until a window is due (not at every capture chunk), a stop, or the stats
            want = pipeline.samples_until_window()
            r = self.ring.read_into(buf, timeout=min(IDLE_WAKE_S, max(0.0, next_stats - now)), want=want)
            if r.dropped:
                self._dropped(r.dropped)
            if r.dropped or r.skipped:  # lost audio, or capture was down (e.g. mic unplugged)
                pipeline.gap(r.start)
            if r.count:
                pipeline.feed(buf[: r.count], r.arrival)
                if not self._ready_sent:  # models loaded and audio flowing
                    self._ready_sent = True
                    self.notifier.ready(f"serving {self.source.description}")
                self.notifier.watchdog()
                if pipeline.all_failed:
                    self.models_failed = True
                    self.stop()
                    pipeline.abandon()
            elif self.ring.closed and self.ring.available() == 0:
                break
            elif self.current_source_state() == "failed":
                # alive and retrying the source: not a hang, so keep systemd's watchdog fed
                if not self._ready_sent:
                    self._ready_sent = True
                    self.notifier.ready(f"waiting for {self.source.description}")
                self.notifier.watchdog()
            if time.monotonic() >= next_stats:
                self.publish_stats()
                next_stats += self.stats_interval
        pipeline.finish()

    def _dropped(self, n: int) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning("the consumer fell behind: %d samples of audio dropped (%d in all)", n, self.ring.dropped)

    def current_source_state(self) -> str:
        """The daemon's view ("ended", "failed" for good) over the source's own ("failed" while retried)."""
        if self.source_state == "running" and getattr(self.source, "state", None) == "failed":
            return "failed"
        return self.source_state

    def stats(self) -> StatsPayload:
        sink = self.sink
        state = self.current_source_state()
        error = getattr(self.source, "error", None) or self.source_error
        source = f"{self.source.description}: {error}" if state == "failed" and error else self.source.description
        health = self.pipeline.health if self.pipeline is not None else None
        protocol = getattr(sink, "protocol", None)  # an MQTT sink's version: 3.1.1 cannot report ACL denials
        return StatsPayload(
            device=self.device,
            time=datetime.now(timezone.utc),
            uptime_s=round(time.monotonic() - self._started, 3),
            source=source,
            source_state=state,
            audio_seconds=round((self.ring.written - self.ring.skipped) / self.source.rate, 3),
            dropped_audio_samples=self.ring.dropped,
            dropped_at_stop_samples=self.dropped_at_stop,
            results_dropped=int(getattr(sink, "dropped", 0)),
            queue_depth=int(getattr(sink, "queue_depth", 0)),
            broker_connected=bool(getattr(sink, "connected", False)),
            cpu_percent=self._meter.cpu_percent(),
            rss_mb=self._meter.rss_mb(),
            audio_nonfinite=health.nonfinite if health else 0,
            audio_clipped=health.clipped if health else 0,
            audio_dc_offset=round(health.last_dc, 4) if health else 0.0,
            mqtt_protocol=protocol,
            acl_denials_visible=None if protocol is None else protocol == "5",
            models=[r.stats() for r in self.runners],
        )

    def publish_stats(self) -> StatsPayload:
        s = self.stats()
        log.info(
            "stats: cpu %.1f%% rss %.1f MB audio %.1fs dropped %d samples, %d results, queue %d",
            s.cpu_percent, s.rss_mb, s.audio_seconds, s.dropped_audio_samples, s.results_dropped, s.queue_depth,
        )
        for m in s.models:
            log.info(
                "stats %s: %s%d windows (%.2f/s), %d gated, %d published, %d failed; inference p50 %.2f p99 %.2f "
                "max %.2f ms; pipeline p50 %.2f p99 %.2f max %.2f ms",
                m.model, "STOPPED (failing), " if m.state == "failed" else "", m.windows, m.windows_per_s, m.gated,
                m.published, m.failed,
                m.inference_ms["p50"], m.inference_ms["p99"], m.inference_ms["max"],
                m.pipeline_ms["p50"], m.pipeline_ms["p99"], m.pipeline_ms["max"],
            )
        self.sink.publish_stats(s)
        self.notifier.status(
            "; ".join(
                f"{m.model}: STOPPED after {m.failed} failed windows" if m.state == "failed"
                else f"{m.model}: {m.windows} windows, pipeline p99 {m.pipeline_ms['p99']:.1f} ms"
                for m in s.models
            )
            + f"; cpu {s.cpu_percent:.1f}%, rss {s.rss_mb:.0f} MB"
        )
        return s
