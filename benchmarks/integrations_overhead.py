"""What Home Assistant discovery and the Prometheus endpoint cost `edgekd serve` (not a test).

    .venv/bin/python benchmarks/integrations_overhead.py --model /tmp/edgekd-bench/wav2tiny.onnx

Runs `python -m edgekd serve` four times (plain, --ha-discovery, --metrics-port, both) on the
bundled speech clip paced in real time and looped, gate off, 0.25 s hop, publishing to a mosquitto
this script starts on a free loopback port. For each run: process CPU (% of one core, from
/proc/PID/stat over the steady state after a warm-up), resident memory at the end (VmRSS), and with
metrics a scrape every second over HTTP (time to fetch /metrics, its size). Also the retained bytes
discovery puts on the broker. Figures vary with what else the machine runs: compare rows of one
run, not runs on different days.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd.bench.procfs import cpu_seconds, status_bytes  # noqa: E402
from edgekd.demo import DEMO_CLIP  # noqa: E402



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    return (status_bytes("VmRSS", pid) or 0) / 2**20


def run(args, broker_port: int, extra: list[str], scrape_port: int | None) -> dict:
    cmd = [sys.executable, "-m", "edgekd", "serve", "--model", str(args.model), "--source", str(args.clip),
           "--realtime", "--loop", "--gate-db", "off", "--hop", f"{args.model.stem}={args.hop}",
           "--broker", f"mqtt://127.0.0.1:{broker_port}", "--device-id", "overhead", "--stats-interval", "5", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(args.warmup)
        if proc.poll() is not None:
            raise SystemExit(f"serve exited early: {proc.stderr.read() if proc.stderr else ''}")
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        scrapes: list[tuple[float, int]] = []
        while time.monotonic() - t0 < args.seconds:
            if scrape_port:
                s = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{scrape_port}/metrics", timeout=2) as r:
                    body = r.read()
                scrapes.append(((time.perf_counter() - s) * 1000, len(body)))
            time.sleep(1.0)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        out = {"cpu_percent": 100 * (c1 - c0) / (t1 - t0), "rss_mb": rss_mb(proc.pid)}
        if scrapes:
            times = sorted(t for t, _ in scrapes)
            out["scrape_ms_median"] = times[len(times) // 2]
            out["scrape_ms_max"] = times[-1]
            out["scrape_bytes"] = scrapes[-1][1]
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def retained_discovery_bytes(broker_port: int) -> tuple[int, int]:
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(broker_port), "-t", "homeassistant/sensor/edgekd_overhead/+/config",
         "--retained-only", "-W", "2", "-F", "%l"],
        capture_output=True, text=True,
    ).stdout.split()
    return len(out), sum(int(n) for n in out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--clip", type=Path, default=DEMO_CLIP)
    ap.add_argument("--hop", type=float, default=0.25)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            rows = []
            for name, extra, metrics in (
                ("plain", [], False),
                ("--ha-discovery", ["--ha-discovery"], False),
                ("--metrics-port", [], True),
                ("both", ["--ha-discovery"], True),
            ):
                mport = free_port() if metrics else None
                flags = [*extra, *(["--metrics-port", str(mport)] if mport else [])]
                rows.append((name, run(args, port, flags, mport)))
            n, size = retained_discovery_bytes(port)
        finally:
            broker.terminate()
            broker.wait(timeout=5)
    print(f"edgekd serve {args.model.name}, hop {args.hop:g} s, {args.seconds:g} s after {args.warmup:g} s warm-up "
          f"(CPU % of one core; scrape every 1 s)")
    print(f"{'run':<16}{'cpu %':>8}{'rss MB':>9}{'scrape ms (median/max)':>25}{'scrape bytes':>14}")
    for name, r in rows:
        scrape = f"{r['scrape_ms_median']:.1f}/{r['scrape_ms_max']:.1f}" if "scrape_ms_median" in r else "-"
        print(f"{name:<16}{r['cpu_percent']:>8.2f}{r['rss_mb']:>9.1f}{scrape:>25}{r.get('scrape_bytes', '-'):>14}")
    print(f"discovery: {n} retained config messages, {size} bytes on the broker")


if __name__ == "__main__":
    main()
