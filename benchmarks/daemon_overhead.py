"""The daemon's own work per window: serve's pipeline plus the real MQTT publisher, two code trees side by side.

    .venv/bin/python benchmarks/daemon_overhead.py [--baseline-tree DIR] [--seconds 30] [--rounds 3] [--profile]

One Wav2Tiny keyword model (the shipped `models/wav2tiny-keyword.onnx` with its stream parts added
into a temp dir) at a 250 -> 255 ms hop, whole windows and the split path. Each run is a fresh
child process pinned to CPU 0 (as `taskset -c 0`), onnxruntime on one thread, that imports edgekd
from one code tree (this checkout, and `--baseline-tree`, e.g. a `git worktree` of main) and:

- feeds the bundled speech clips, looped, through `edgekd.pipeline.Pipeline` in capture-sized
  chunks (64 ms), paced at `--speed` times real time so that the publisher's sender thread wakes
  for each result as it does in a running daemon (sleeping costs no CPU), every window classified
  (energy gate off, mode all);
- publishes every result through `edgekd.mqtt.publisher.MqttPublisher` with its default durable
  SQLite outbox (in a temp dir) at QoS 1 to a real broker (mosquitto when installed, else the
  embedded one, in the parent process so its CPU is not charged to the child), and waits until the
  broker acknowledged every result;
- reports the process CPU time (all threads: pipeline, sender, paho's network loop) per audio
  second, and the same for the pipeline alone with results serialised to JSON but not published.

Configurations run in interleaved rounds (tree, path and sink rotate) and the median of each is
shown. Not included: the capture thread and ring buffer, the stats message every few seconds, and
start-up. `--parts` also times each piece of the per-window work on its own in each tree (health
check, windowing, softmax, post-processing, payload and JSON, MQTT 5 properties, outbox put and
sync), which a busy machine disturbs far less than whole runs. `--profile` adds a cProfile of the
current tree, split path, with the publisher (the pipeline, and the sender thread by its own CPU).
Not a test: timings vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
HOP_MS = 250.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on a free loopback port when it is installed, else edgekd's embedded broker."""

    def __init__(self, tmp: Path) -> None:
        self.proc: subprocess.Popen | None = None
        self.embedded = None
        mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if mosquitto:
            port = free_port()
            conf = tmp / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            self.proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.url, self.protocol, self.name = f"mqtt://127.0.0.1:{port}", "auto", "mosquitto"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError(f"mosquitto did not start on port {port}")
        sys.path.insert(0, str(ROOT))
        from edgekd.mqtt.broker import EmbeddedBroker

        self.embedded = EmbeddedBroker()
        self.embedded.__enter__()
        self.url, self.protocol, self.name = self.embedded.url, self.embedded.protocol, "embedded (amqtt)"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        if self.embedded is not None:
            self.embedded.__exit__(None, None, None)


def thread_cpu() -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of each thread of this process, by thread name (main, sender, paho, ...)."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {str(t.native_id): t.name.split(" ")[0].split("-")[0] + ("-sender" if "sender" in t.name else "")
             for t in threading.enumerate()}
    out: dict[str, tuple[float, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = names.get(task.name, stat[stat.index("(") + 1 : stat.rindex(")")])
        fields = stat[stat.rindex(")") + 2 :].split()
        u, s = int(fields[11]) / tick, int(fields[12]) / tick
        key = "main" if task.name == str(os.getpid()) else name
        prev = out.get(key, (0.0, 0.0))
        out[key] = (prev[0] + u, prev[1] + s)
    return out


# -- the child: one measured run ------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(args.tree).resolve()))
    os.sched_setaffinity(0, {0})
    import numpy as np

    from edgekd.audio.decode import decode_file
    from edgekd.audio.sources import chunk_frames
    from edgekd.model import Model
    from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
    from edgekd.postprocess import PostConfig
    from edgekd.split import load_split, shared_hop

    assets = sorted((ROOT / "edgekd" / "assets").glob("*.flac"))
    one = np.concatenate([decode_file(p, RATE).samples for p in assets])
    n = int(args.seconds * RATE)
    x = np.tile(one, int(np.ceil(n / len(one))))[:n].astype(np.float32)
    model = Model(args.model)
    split = load_split(model)
    assert split is not None, "the split path did not pass its load check"
    hop = shared_hop(round(HOP_MS * RATE / 1e3), split.spec.hop, RATE)
    runner = ModelRunner(model, RunnerSpec(hop, PostConfig(), gate_db=None))

    publisher = None
    if args.sink == "mqtt":
        from edgekd.mqtt.publisher import MqttPublisher
        from edgekd.mqtt.settings import MqttSettings

        settings = MqttSettings(
            url=args.broker, device_id="overhead", protocol=args.protocol, qos=1,
            outbox_path=str(Path(args.tmp) / f"outbox-{os.getpid()}.sqlite3"),
        )
        sender_prof = None
        if args.profile:  # the sender thread's own profile, beside the pipeline's
            import cProfile

            sender_prof = cProfile.Profile(time.thread_time)  # CPU of this thread, not wall time
            loop = MqttPublisher._send_loop

            def profiled_loop(self) -> None:  # type: ignore[no-untyped-def]
                sender_prof.enable()
                try:
                    loop(self)
                finally:
                    sender_prof.disable()

            MqttPublisher._send_loop = profiled_loop  # type: ignore[method-assign]
        publisher = MqttPublisher(settings)
        publisher.start()
        if not publisher.wait_connected(10):
            raise RuntimeError(f"no connection to {args.broker}")
        sink = publisher
    else:

        class JsonSink:
            def __init__(self) -> None:
                self.results = 0

            def publish_result(self, result) -> None:
                self.results += 1
                result.to_json()

        sink = JsonSink()

    pipe = Pipeline([runner], RATE, sink, "overhead", split=args.path == "split")
    step = chunk_frames(RATE)
    pace = step / RATE / args.speed
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    threads0 = thread_cpu()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i, pos in enumerate(range(0, len(x), step)):
        pipe.feed(x[pos : pos + step])
        delay = wall0 + (i + 1) * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    if publisher is not None:
        deadline = time.monotonic() + 30
        while publisher.queue_depth and time.monotonic() < deadline:
            time.sleep(0.005)
    cpu = time.process_time() - cpu0
    threads1 = thread_cpu()
    if prof is not None:
        prof.disable()
    published = publisher.published if publisher is not None else sink.results  # type: ignore[attr-defined]
    if publisher is not None:
        publisher.close()
        if args.profile and sender_prof is not None:
            import io
            import pstats

            s3 = io.StringIO()
            s3.write("the publisher's sender thread (including the durable sync), by its own CPU time:\n")
            pstats.Stats(sender_prof, stream=s3).sort_stats("tottime").print_stats(args.top)
            sender_text = s3.getvalue()
    out = {"cpu_s": cpu, "audio_s": len(x) / RATE, "windows": runner.counters.windows, "published": published,
           "threads": {k: [u - threads0.get(k, (0.0, 0.0))[0], s - threads0.get(k, (0.0, 0.0))[1]]
                       for k, (u, s) in threads1.items()}}
    if prof is not None:
        import io
        import pstats

        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
        s2 = io.StringIO()
        pstats.Stats(prof, stream=s2).sort_stats("cumulative").print_stats(args.top)
        out["profile"] = "the pipeline (main thread), by internal time and cumulative:\n" + s.getvalue() + s2.getvalue()
        if args.sink == "mqtt":
            out["profile"] += sender_text
    print("RESULT " + json.dumps(out))
    return 0


# -- the parts: each piece of the daemon's own per-window work, timed on its own ---------------------


def parts(args: argparse.Namespace) -> int:
    """CPU microseconds per call of each piece (process time, so a sync's fsync counts its CPU, not its
    wait), best of 5 repeats (the least disturbed by a busy machine)."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    os.sched_setaffinity(0, {0})
    import timeit

    import numpy as np

    from edgekd.audio.health import AudioHealth
    from edgekd.audio.sources import chunk_frames
    from edgekd.audio.windowing import Windower
    from edgekd.contract import ModelMetadata
    from edgekd.model import logits_to_scores
    from edgekd.mqtt.connection import make_client
    from edgekd.mqtt.outbox_disk import SqliteOutbox
    from edgekd.mqtt.settings import MqttSettings
    from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
    from edgekd.postprocess import PostConfig, PostProcessor
    from edgekd.sink import MemorySink

    rng = np.random.default_rng(0)
    step = chunk_frames(RATE)
    chunk = (rng.standard_normal(step) * 0.1).astype(np.float32)
    labels = tuple(f"label{i}" for i in range(12))
    logits = rng.standard_normal((1, 12)).astype(np.float32)
    scores = logits_to_scores(logits, False)[0]

    class Scorer:
        meta = ModelMetadata(task="keyword", labels=labels, sample_rate=RATE, window_samples=RATE, multi_label=False,
                             name="wav2tiny-keyword", version="1.0.0")  # fmt: skip
        short_hash = "d03768189e51"

    runner = ModelRunner(Scorer(), RunnerSpec(4080, PostConfig(), gate_db=None))  # type: ignore[arg-type]
    pipe = Pipeline([runner], RATE, MemorySink(), "overhead")
    decision = runner.post.step(scores, 1.0)
    health = AudioHealth("bench", RATE)
    windower = Windower(RATE, 4080)
    post = PostProcessor(labels, PostConfig())
    client = make_client(MqttSettings(url="mqtt://127.0.0.1:1", device_id="overhead", protocol="5"), persistent=True)
    topic = client.topics.result("keyword")  # type: ignore[union-attr]
    outbox = SqliteOutbox(Path(args.tmp) / f"parts-{os.getpid()}.sqlite3")
    payload = pipe.result(runner, 0, RATE, decision, 0.1).to_json()  # type: ignore[arg-type]

    def put_and_sync() -> None:
        outbox.put(topic, payload, 1)
        outbox.sync()

    pieces = {
        "health": lambda: health.check(chunk),
        "windowing": lambda: list(windower.push(chunk)),
        "scores": lambda: logits_to_scores(logits, False),
        "post": lambda: post.step(scores, 1.0),
        "payload": lambda: pipe.result(runner, 0, RATE, decision, 0.1).to_json(),  # type: ignore[arg-type]
        "properties": lambda: client.message_properties(topic).pack(),  # type: ignore[union-attr]
        "outbox_put": lambda: outbox.put(topic, payload, 1),
        "outbox_put_sync": put_and_sync,
    }
    out = {}
    for name, fn in pieces.items():
        number = 50 if name == "outbox_put_sync" else 2000
        out[name] = min(timeit.repeat(fn, timer=time.process_time, number=number, repeat=5)) / number * 1e6
    outbox.close()
    print("RESULT " + json.dumps(out))
    return 0


PER_WINDOW = {  # calls per result at a 255 ms hop with 64 ms capture chunks
    "health": 4080 / 1024, "windowing": 4080 / 1024, "scores": 1, "post": 1, "payload": 1, "properties": 1,
    "outbox_put": 1,
}
PART_NAMES = {
    "health": "audio health, per 64 ms chunk",
    "windowing": "windowing, per 64 ms chunk",
    "scores": "softmax of [1, 12] logits",
    "post": "post-processing step",
    "payload": "result payload + JSON",
    "properties": "MQTT 5 properties, packed",
    "outbox_put": "outbox put (SQLite commit)",
    "outbox_put_sync": "outbox put + sync (checkpoint, fsync)",
}


# -- the parent -------------------------------------------------------------------------------------


def run_child(tree: Path, path: str, sink: str, model: Path, broker: Broker, tmp: Path, args, profile=False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(tree.resolve())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", str(tree), "--path", path,
           "--sink", sink, "--model", str(model), "--broker", broker.url, "--protocol", broker.protocol,
           "--tmp", str(tmp), "--seconds", str(args.seconds), "--speed", str(args.speed), "--top", str(args.top)]
    if profile:
        cmd.append("--profile")
    if sink == "parts":
        cmd.append("--parts-child")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"child {tree} {path} {sink} failed: {done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, default=None, help="another checkout to compare (e.g. main)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio seconds per run")
    parser.add_argument("--speed", type=float, default=10.0, help="times real time the audio is fed")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown")
    parser.add_argument("--profile", action="store_true", help="also cProfile this tree, split path, with MQTT")
    parser.add_argument("--top", type=int, default=25, help="functions shown in the profile")
    parser.add_argument("--parts", action="store_true", help="also time each piece of the per-window work on its own")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parts-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--path", default="split", help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="mqtt", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--broker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return parts(args) if args.parts_child else child(args)

    trees = [("this tree", ROOT)] + ([("baseline", args.baseline_tree)] if args.baseline_tree else [])
    configs = [(t, p, s) for t, _ in trees for p in ("whole", "split") for s in ("json", "mqtt")]
    cpu: dict[tuple[str, str, str], list[float]] = {c: [] for c in configs}
    counts: dict[tuple[str, str, str], tuple[int, int]] = {}
    threads: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sys.path.insert(0, str(ROOT))
        from edgekd_train.stream_parts import add_stream_parts

        model = tmp / "wav2tiny-keyword.onnx"
        add_stream_parts(ROOT / "models" / "wav2tiny-keyword.onnx", model)
        broker = Broker(tmp)
        try:
            for round_no in range(args.rounds):
                order = configs[round_no % len(configs):] + configs[: round_no % len(configs)]
                if round_no % 2:
                    order.reverse()
                for config in order:
                    label, path, sink = config
                    tree = dict(trees)[label]
                    r = run_child(tree, path, sink, model, broker, tmp, args)
                    cpu[config].append(r["cpu_s"] * 1e3 / r["audio_s"])
                    counts[config] = (r["windows"], r["published"])
                    threads[config] = {k: (u * 1e3 / r["audio_s"], sy * 1e3 / r["audio_s"]) for k, (u, sy) in r["threads"].items()}
            part_times: dict[str, dict[str, list[float]]] = {label: {} for label, _ in trees}
            for round_no in range(args.rounds if args.parts else 0):
                for label, tree in trees if round_no % 2 == 0 else trees[::-1]:
                    for name, us in run_child(tree, "split", "parts", model, broker, tmp, args).items():
                        part_times[label].setdefault(name, []).append(us)
            profile = run_child(ROOT, "split", "mqtt", model, broker, tmp, args, profile=True) if args.profile else None
        finally:
            broker.close()
    print(f"daemon overhead: 1 Wav2Tiny keyword model, hop 250 -> 255 ms, {args.seconds:g} s of audio per run fed at "
          f"{args.speed:g}x real time, median of {args.rounds} interleaved rounds, each a fresh process pinned to CPU 0, "
          f"onnxruntime 1 thread; broker {broker.name}, QoS 1, SQLite outbox")  # fmt: skip
    header = f"{'tree':<10} {'path':<6} {'sink':<28} {'windows':>8} {'published':>10} {'ms CPU / audio s':>17}"
    print(header)
    print("-" * len(header))
    sinks = {"json": "JSON only (no publisher)", "mqtt": "MQTT publisher + outbox"}
    for config in configs:
        label, path, sink = config
        w, p = counts[config]
        print(f"{label:<10} {path:<6} {sinks[sink]:<28} {w:>8} {p:>10} {statistics.median(cpu[config]):>17.3f}")
    print("every run, ms CPU per audio s: " + "; ".join(
        f"{t} {p} {s} " + "/".join(f"{v:.2f}" for v in vals) for (t, p, s), vals in cpu.items()))
    print("by thread, last round, ms CPU per audio s as user+system (/proc ticks of 10 ms: coarse): " + "; ".join(
        f"{t} {p} {s}: " + ", ".join(f"{k} {u:.1f}+{sy:.1f}" for k, (u, sy) in sorted(threads[(t, p, s)].items()) if u + sy)
        for (t, p, s) in configs))
    if args.parts:
        print()
        labels = [label for label, _ in trees]
        print(f"each piece on its own, CPU microseconds per call (median over rounds of the best of 5 repeats), and per "
              f"result at 255 ms: {' | '.join(labels)}")  # fmt: skip
        totals = {label: 0.0 for label in labels}
        for name, text in PART_NAMES.items():
            per = [statistics.median(part_times[label][name]) for label in labels]
            per_result = [p * PER_WINDOW.get(name, 0) for p in per]
            for label, v in zip(labels, per_result):
                totals[label] += v
            shown = " | ".join(f"{p:8.2f} us" + (f" ({r:7.2f} per result)" if name in PER_WINDOW else "") for p, r in zip(per, per_result))
            print(f"  {text:<40} {shown}")
        print(f"  {'sum per result (without the sync)':<40} " + " | ".join(f"{totals[l]:8.2f} us" for l in labels))
    if profile is not None:
        print()
        print(profile["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
