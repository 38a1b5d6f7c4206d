"""Soak `edgekd serve`: hours of real speech through several models as fast as it goes, then a
stretch at real-time rate; resident memory, drops and the consistency of the stats. Not a test.

    .venv/bin/python benchmarks/soak.py --model models/wav2tiny-emotion.onnx \
        --model models/wav2small-emotion.onnx --model models/wav2small-emotion-int8.onnx \
        --fast-seconds 180 --realtime-seconds 30

Phase 1, fast: the daemon runs as its own process (`python -m edgekd serve`, exactly as a user
starts it) on the bundled speech clip looped with no pacing (`--loop`, no `--realtime`), every
window classified and published (gate off, mode all) through its disk outbox to a mosquitto of
this script's own on loopback. Memory is read from /proc/PID/status every stats interval; the
first `--warmup-seconds` are warm-up. Growth is the last reading minus the first one after warm-up
(and the least-squares slope per audio hour).
Phase 2, real time: the same with `--realtime` (paced like a microphone), checking that no audio
and no result is dropped.

Checks, from the daemon's own stats and from outside:
- windows per model = what the audio length and hop give (every window accounted for);
- results produced (the models' `published`) = results that reached the subscriber (unique ids)
  + results left in the outbox after SIGTERM + results dropped;
- dropped audio and dropped results are 0 at real-time rate.
Prints a JSON report (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd.audio.decode import file_info  # noqa: E402
from edgekd.bench.procfs import status_bytes  # noqa: E402
from edgekd.model import Model  # noqa: E402

CLIP = ROOT / "edgekd" / "assets" / "YAF_bar_angry.flac"
DEVICE = "soak"
_ID = re.compile(rb'"id":"([^"]+)"')


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            sys.exit("soak needs mosquitto (apt-get install mosquitto)")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 1000000"]
        if os.geteuid() == 0:
            import getpass

            lines.append(f"user {getpass.getuser()}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Collector:
    """Subscribes to the device's topics: unique result ids, and every stats payload."""

    def __init__(self, port: int) -> None:
        self.ids: set[bytes] = set()
        self.results = 0
        self.stats: list[dict] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-collector", clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"edgekd/{DEVICE}/+", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/stats"):
            body = json.loads(msg.payload)
            body["_received"] = time.monotonic()
            with self.lock:
                self.stats.append(body)
        elif not msg.topic.endswith("/status"):
            m = _ID.search(msg.payload)
            with self.lock:
                self.results += 1
                if m:
                    self.ids.add(m.group(1))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rss_mb(pid: int) -> float:
    return (status_bytes("VmRSS", pid) or 0) / 2**20


def expected_windows(audio_seconds: float, rate: int, window: int, hop: int) -> int:
    n = int(round(audio_seconds * rate))
    return 0 if n < window else (n - window) // hop + 1


def phase(name: str, args, models: list[Path], seconds: float, realtime: bool, workdir: Path) -> dict:
    broker = Mosquitto(workdir)
    collector = Collector(broker.port)
    state = workdir / f"state-{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.update(STATE_DIRECTORY=str(state), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "edgekd", "serve", "--source", str(args.clip), "--loop", "--gate-db", "off",
           "--mode", "all", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--device-id", DEVICE,
           "--stats-interval", str(args.stats_interval), "--threads", "1", "--log-level", "warning"]
    if args.hop:
        cmd += ["--hop", f"emotion={args.hop}"]
    if realtime:
        cmd.append("--realtime")
    for m in models:
        cmd += ["--model", str(m)]
    log = open(workdir / f"serve-{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=workdir)
    started = time.monotonic()
    samples: list[tuple[float, float, float]] = []  # (wall s, audio s, rss MB)
    while time.monotonic() - started < seconds and proc.poll() is None:
        time.sleep(args.stats_interval)
        with collector.lock:
            audio = collector.stats[-1]["audio_seconds"] if collector.stats else 0.0
        samples.append((time.monotonic() - started, audio, rss_mb(proc.pid)))
    if proc.poll() is not None:
        log.close()
        tail = (workdir / f"serve-{name}.log").read_text()[-3000:]
        sys.exit(f"serve exited early with {proc.returncode}:\n{tail}")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    time.sleep(1.0)  # the last messages reach the collector
    collector.close()
    broker.stop()
    log.close()

    final = collector.stats[-1]  # published after the pipeline finished, before the outbox closed
    left = 0
    db = state / f"outbox-{DEVICE}.sqlite3"
    if db.exists():
        with sqlite3.connect(db) as con:
            left = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    produced = sum(m["published"] for m in final["models"])
    hop_s = args.hop
    per_model = []
    for spec, m in zip(models, final["models"]):
        meta = Model(spec).meta
        hop = int(round(hop_s * meta.sample_rate)) if hop_s else max(1, meta.window_samples // 4)
        want = expected_windows(final["audio_seconds"], meta.sample_rate, meta.window_samples, hop)
        per_model.append({
            "model": m["model"], "file": spec.name, "windows": m["windows"], "gated": m["gated"],
            "expected_windows": want, "published": m["published"],
            "inference_ms": m["inference_ms"], "pipeline_ms": m["pipeline_ms"],
        })
    warm = [s for s in samples if s[0] >= args.warmup_seconds] or samples
    rss = [s[2] for s in warm]
    slope = None
    if not realtime and len(warm) >= 3 and warm[-1][1] > warm[0][1]:
        audio_h = np.array([s[1] for s in warm]) / 3600.0
        slope = float(np.polyfit(audio_h, np.array(rss), 1)[0])
    return {
        "phase": name,
        "wall_seconds": round(samples[-1][0], 1) if samples else 0,
        "audio_seconds": final["audio_seconds"],
        "audio_hours": round(final["audio_seconds"] / 3600.0, 3),
        "speed_x_realtime": round(final["audio_seconds"] / max(1e-9, samples[-1][0]), 1) if samples else 0,
        "rss_mb_after_warmup": round(rss[0], 1) if rss else None,
        "rss_mb_last": round(rss[-1], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_growth_mb": round(rss[-1] - rss[0], 2) if rss else None,
        "rss_slope_mb_per_audio_hour": round(slope, 3) if slope is not None else None,
        "dropped_audio_samples": final["dropped_audio_samples"],
        "results_dropped": final["results_dropped"],
        "results_produced": produced,
        "results_received_unique": len(collector.ids),
        "results_received_with_duplicates": collector.results,
        "results_left_in_outbox": left,
        "accounted": produced == len(collector.ids) + left + final["results_dropped"],
        "windows_match": all(abs(m["windows"] + m["gated"] - m["expected_windows"]) <= 1 for m in per_model),
        "audio_nonfinite": final.get("audio_nonfinite"),
        "audio_clipped": final.get("audio_clipped"),
        "cpu_percent_last": final["cpu_percent"],
        "models": per_model,
        "rss_samples": [(round(w, 1), round(a, 1), round(r, 2)) for w, a, r in samples],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--fast-seconds", type=float, default=180.0)
    ap.add_argument("--realtime-seconds", type=float, default=30.0)
    ap.add_argument("--warmup-seconds", type=float, default=30.0)
    ap.add_argument("--stats-interval", type=float, default=5.0)
    ap.add_argument("--hop", type=float, default=None, help="seconds (default: a quarter of each window)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rate, _, frames = file_info(args.clip)
    with tempfile.TemporaryDirectory(prefix="edgekd-soak-") as tmp:
        work = Path(tmp)
        models = []
        for i, m in enumerate(args.model):  # a private copy: a model rewritten meanwhile cannot change the run
            copy = work / f"{i}-{m.name}"
            shutil.copy(m, copy)
            models.append(copy)
        report = {
            "clip": f"{args.clip.name} ({frames / rate:.2f} s at {rate} Hz, looped)",
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "phases": [phase("fast", args, models, args.fast_seconds, False, work)],
        }
        if args.realtime_seconds > 0:
            report["phases"].append(phase("realtime", args, models, args.realtime_seconds, True, work))
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({**report, "phases": [{k: v for k, v in p.items() if k != "rss_samples"} for p in report["phases"]]}, indent=2))


if __name__ == "__main__":
    main()
