"""`edgekd bench --e2e`: the real daemon, a real broker, a subscriber; latency from audio to subscriber.

For each model, `edgekd serve` runs as its own child process on a clip paced in real time (looped),
publishing every window (`--mode all --gate-db off`) to the broker (the embedded one, or `--broker
URL`, e.g. a mosquitto). A subscriber in this process notes when each result arrives. Figures:

- `audio_to_subscriber_ms`: arrival time at the subscriber - the result's `window_end` (the UTC
  time of the window's last sample on the daemon's sample clock, which the real-time pacing keeps
  on the wall clock). It includes the capture chunk (32 ms of audio per write), the wait for the
  next hop, inference, the MQTT client, the broker and the subscriber's network thread.
- `pipeline_ms` / `inference_ms`: what the daemon itself reports in each result.
- `results` / `results_expected`: results that arrived while the audio played, against one per hop;
  `kept_up` is false when the daemon fell behind the audio (its latency then grows with the run).
- `cpu_s_per_audio_s`: the daemon process's CPU time (all threads, from /proc) per second of audio,
  measured between the first result and the end of the run, so start-up (imports, model load) is
  left out; a real-time source makes one wall second one audio second.

Linux only for the CPU figure (it reads /proc/PID/stat); elsewhere it is reported as unavailable.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.procfs import cpu_seconds

log = logging.getLogger(__name__)

FIRST_RESULT_TIMEOUT_S = 60.0  # model load plus the first full window
STOP_TIMEOUT_S = 15.0


class E2EError(RuntimeError):
    """The end-to-end run could not be made (no clip, no broker); the message says why and what to do."""


class DaemonFailed(E2EError):
    """`edgekd serve` of one model gave no result; the other models' figures still stand."""


@dataclass(frozen=True)
class E2EConfig:
    clip: Path
    seconds: float = 15.0  # measured audio seconds per model, after the first result
    broker: str = "embedded"
    threads: int = 1
    hop_s: float = 0.25


@dataclass
class _Arrivals:
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: list[tuple[float, Any]] = field(default_factory=list)
    first: threading.Event = field(default_factory=threading.Event)

    def on_result(self, received: Any) -> None:
        now = time.time()
        if received.device != self.device or received.result is None:
            return
        with self.lock:
            self.rows.append((now, received.result))
        self.first.set()


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max()), "mean": float(a.mean())}


def default_clip() -> Path:
    from edgekd.demo import DEMO_CLIP

    return DEMO_CLIP


def _serve_cmd(path: Path, name: str, cfg: E2EConfig, url: str, device: str) -> list[str]:
    return [
        sys.executable, "-m", "edgekd", "serve",
        "--model", str(path), "--source", str(cfg.clip), "--realtime", "--loop",
        "--broker", url, "--device-id", device, "--mode", "all", "--gate-db", "off",
        "--hop", f"{name}={cfg.hop_s:g}", "--threads", str(cfg.threads),
        "--stats-interval", "5", "--log-level", "warning",
    ]  # fmt: skip


def run_e2e(path: Path, name: str, cfg: E2EConfig) -> dict[str, Any]:
    """One model through `edgekd serve` -> broker -> subscriber; raises E2EError if it cannot run."""
    from edgekd.config import load_settings, mqtt_settings
    from edgekd.mqtt.broker import EmbeddedBroker
    from edgekd.mqtt.listen import Listener

    if not cfg.clip.is_file():
        raise E2EError(f"--clip {cfg.clip}: no such file")
    device = f"bench-e2e-{os.getpid()}"
    broker = EmbeddedBroker().start() if cfg.broker == "embedded" else None
    try:
        url = broker.url if broker is not None else cfg.broker
        # The embedded broker speaks one protocol, known up front (as `edgekd demo` does it);
        # a real broker is left to the daemon's own negotiation.
        mqtt_env = {"EDGEKD_MQTT__PROTOCOL": str(broker.protocol)} if broker is not None else {}
        overrides: dict[str, Any] = {"url": url, **({"protocol": broker.protocol} if broker is not None else {})}
        mqtt = mqtt_settings(load_settings(overrides={"device_id": device, "mqtt": overrides}, environ={}))
        arrivals = _Arrivals(device)
        with Listener(mqtt, on_result=arrivals.on_result) as listener:
            try:
                listener.wait_subscribed()
            except Exception as exc:  # BrokerRefusedError / BrokerUnreachableError carry the reason
                raise E2EError(f"--broker {url}: {exc}") from None
            return _run_daemon(path, name, cfg, url, device, arrivals, mqtt_env)
    finally:
        if broker is not None:
            broker.stop()


def _run_daemon(
    path: Path, name: str, cfg: E2EConfig, url: str, device: str, arrivals: _Arrivals, mqtt_env: dict[str, str]
) -> dict[str, Any]:
    from edgekd.mqtt.outbox import state_directory

    state = state_directory()
    state.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-", dir=state) as tmp:
        # The daemon's disk outbox on the disk it uses in production (not a tmpfs /tmp), in a
        # folder that goes away with the run.
        env = {**os.environ, **mqtt_env, "EDGEKD_MQTT__OUTBOX_PATH": str(Path(tmp) / "outbox.sqlite3")}
        errors = Path(tmp) / "serve.log"  # a file, not a pipe: a chatty daemon must never block on it
        with open(errors, "w") as err_file:
            cmd = _serve_cmd(path, name, cfg, url, device)
            return _measure_child(cmd, env, err_file, errors, path, cfg, arrivals)


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no result and no error"


def _measure_child(
    cmd: list[str], env: dict[str, str], err_file: Any, errors: Path, path: Path, cfg: E2EConfig, arrivals: _Arrivals
) -> dict[str, Any]:
    log.debug("e2e: %s", " ".join(cmd))
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, env=env)
    try:
        if not arrivals.first.wait(FIRST_RESULT_TIMEOUT_S):
            child.kill()
            child.wait()
            why = _last_line(errors)
            raise DaemonFailed(f"edgekd serve of {path} gave no result in {FIRST_RESULT_TIMEOUT_S:.0f} s: {why}")
        cpu0, wall0 = cpu_seconds(child.pid), time.monotonic()
        with arrivals.lock:
            skip = len(arrivals.rows)  # results before this point belong to start-up
        time.sleep(cfg.seconds)
        cpu1, wall1 = cpu_seconds(child.pid), time.monotonic()
        with arrivals.lock:
            rows = list(arrivals.rows[skip:])  # what arrived while the audio played
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
            stopped = "clean exit on SIGTERM"
        except subprocess.TimeoutExpired:
            # It finishes the windows in hand before exiting; a daemon that fell behind has many.
            child.kill()
            child.wait()
            stopped = f"killed: still busy {STOP_TIMEOUT_S:.0f} s after SIGTERM (it had fallen behind the audio)"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    expected = int((wall1 - wall0) / cfg.hop_s)
    e2e = [(t - r.window_end.timestamp()) * 1e3 for t, r in rows]
    cpu = (cpu1 - cpu0) / (wall1 - wall0) if (cpu0 is not None and cpu1 is not None) else None
    return {
        "broker": cfg.broker,
        "clip": str(cfg.clip),
        "hop_s": cfg.hop_s,
        "audio_s": wall1 - wall0,
        "results": len(rows),
        "results_expected": expected,
        "kept_up": len(rows) >= expected - 2,  # one hop of slack at each end
        "audio_to_subscriber_ms": _percentiles(e2e),
        "pipeline_ms": _percentiles([r.latency_ms.pipeline for _, r in rows]),
        "inference_ms": _percentiles([r.latency_ms.inference for _, r in rows]),
        "cpu_s_per_audio_s": cpu,
        "cpu_note": None if cpu is not None else "needs /proc (Linux)",
        "exit_code": child.returncode,
        "stopped": stopped,
    }
