"""Outages on repeat: broker restarts and `kill -9` of the daemon while it serves, then count what
arrived. Not a test (it takes minutes); docs/reliability.md records its figures.

    .venv/bin/python benchmarks/outages.py --model models/wav2tiny-emotion.onnx --cycles 12

`edgekd serve` (its own process, as a user runs it) serves the bundled speech clip paced in real
time and looped, publishing every window at a 250 ms hop through its disk outbox to a mosquitto of
this script's own (persistence on). A collector holds a persistent QoS 1 session on that broker.
Each cycle, after a few seconds of normal running, one fault, in turn:
  broker  mosquitto stopped for 2-6 s, then started again (the daemon keeps classifying);
  kill    the daemon killed with SIGKILL, restarted after 1 s (same state directory);
  both    the broker stopped, the daemon killed while it is away, both back.
At the end the daemon gets SIGTERM. For every run of the daemon (results carry a run id), the
seqs that arrived must be 0..N without a gap; N+1 is what that run produced (the last run's final
stats must agree). Duplicates (same id, resent after a lost acknowledgement) are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "edgekd" / "assets" / "YAF_bar_angry.flac"
DEVICE = "outages"


class Broker:
    def __init__(self, work: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = work / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {work}/", "max_queued_messages 1000000"]
        if os.geteuid() == 0:
            import getpass

            lines.append(f"user {getpass.getuser()}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Collector:
    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, int]] = []  # (id, seq) in order of arrival, duplicates included
        self.stats: list[dict] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outages-collector", clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"edgekd/{DEVICE}/+", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/status"):
            return
        body = json.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/stats"):
                self.stats.append(body)
            else:
                self.arrivals.append((body["id"], body["seq"]))


def serve(args, port: int, state: Path, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.update(STATE_DIRECTORY=str(state), PYTHONUNBUFFERED="1", EDGEKD_MQTT__RECONNECT_MIN="0.2",
               EDGEKD_MQTT__RECONNECT_MAX="1.0")
    return subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--model", str(args.model), "--source", str(CLIP), "--realtime",
         "--loop", "--gate-db", "off", "--mode", "all", "--hop", "emotion=0.25", "--broker", f"mqtt://127.0.0.1:{port}",
         "--device-id", DEVICE, "--stats-interval", "1", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=log, env=env,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--cycles", type=int, default=12)
    ap.add_argument("--run-seconds", type=float, default=4.0, help="normal running between faults")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    faults = defaultdict(int)
    with tempfile.TemporaryDirectory(prefix="edgekd-outages-") as tmp:
        work = Path(tmp)
        model = work / args.model.name
        shutil.copy(args.model, model)
        args.model = model
        broker = Broker(work)
        broker.start()
        collector = Collector(broker.port)
        state = work / "state"
        log = open(work / "serve.log", "w")
        daemon = serve(args, broker.port, state, log)
        started = time.monotonic()
        for cycle in range(args.cycles):
            time.sleep(args.run_seconds)
            kind = ("broker", "kill", "both")[cycle % 3]
            if kind == "broker":
                broker.stop()
                time.sleep(rng.uniform(2, 6))
                broker.start()
            elif kind == "kill":
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()
                time.sleep(1.0)
                daemon = serve(args, broker.port, state, log)
            else:
                broker.stop()
                time.sleep(rng.uniform(1, 3))
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()
                time.sleep(1.0)
                broker.start()
                daemon = serve(args, broker.port, state, log)
            faults[kind] += 1
            print(f"cycle {cycle + 1}/{args.cycles}: {kind}", file=sys.stderr)
        time.sleep(args.run_seconds)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        deadline = time.monotonic() + 20
        last = -1
        while time.monotonic() < deadline:  # until nothing new arrives for 2 s
            time.sleep(2)
            with collector.lock:
                n = len(collector.arrivals)
            if n == last:
                break
            last = n
        wall = time.monotonic() - started
        collector.client.loop_stop()
        broker.stop()
        log.close()
        serve_log = (work / "serve.log").read_text()

    runs: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    duplicates = 0
    for rid, seq in collector.arrivals:
        if rid in seen:
            duplicates += 1
            continue
        seen.add(rid)
        runs[rid.rsplit("/", 1)[1].split("-")[0]].append(seq)
    per_run = []
    gaps = 0
    out_of_order = 0
    for run in sorted(runs, key=int):
        seqs = runs[run]
        missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
        gaps += len(missing)
        out_of_order += sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
        per_run.append({"run": run, "produced": max(seqs) + 1, "arrived_unique": len(seqs), "missing": missing[:20]})
    last_stats = collector.stats[-1] if collector.stats else {}
    last_run_produced = sum(m["published"] for m in last_stats.get("models", []))
    report = {
        "wall_seconds": round(wall, 1),
        "faults": dict(faults),
        "daemon_runs": len(per_run),
        "results_produced": sum(r["produced"] for r in per_run),
        "results_arrived_unique": sum(r["arrived_unique"] for r in per_run),
        "duplicates": duplicates,
        "missing": gaps,
        "out_of_order_within_a_run": out_of_order,
        "last_run_produced_by_its_stats": last_run_produced,
        "last_run_produced_by_its_seqs": per_run[-1]["produced"] if per_run else 0,
        "tracebacks_in_serve_log": serve_log.count("Traceback"),
        "runs": per_run,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
