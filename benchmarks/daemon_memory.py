"""The memory of a running `edgekd serve` with one model: RSS, PSS and USS, against the bare imports.

    .venv/bin/python benchmarks/daemon_memory.py [--settle 20] [--samples 5] [--clip FILE]

Target: private memory (USS) at most 40 MB with one model, RSS and PSS stated beside it.

Each daemon is started as a user starts it, `python -m edgekd serve --model M --source CLIP
--realtime --loop --stdout` (the bundled speech clip paced in real time and looped, results as JSON
lines read and counted here), once with the shipped `models/wav2tiny-keyword.onnx` (whole windows)
and once with a copy carrying its stream parts (`edgekd_train.stream_parts`, into a temp dir: the split
path). After --settle seconds of steady state, RSS, PSS and USS (Private_Clean + Private_Dirty) are
read from /proc/PID/smaps_rollup once a second for --samples seconds and the median is shown, with
the peak RSS (VmHWM). The floor is a Python that has only imported what the daemon cannot do
without, `import numpy, onnxruntime, paho.mqtt.client`; a second row adds edgekd's own imports
(`edgekd.cli`, `edgekd.serve`) before any model is loaded. PSS depends on what other processes on
the machine map the same libraries (other Pythons with numpy and onnxruntime lower it); USS does
not. Not a test: memory varies with the machine, the Python and the libraries' builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgekd.bench.procfs import Footprint, footprint, status_bytes  # noqa: E402
from edgekd.demo import DEMO_CLIP  # noqa: E402

TARGET_USS_BYTES = 40_000_000
MODEL = ROOT / "models" / "wav2tiny-keyword.onnx"
FLOOR_IMPORTS = "import numpy, onnxruntime, paho.mqtt.client"
EDGEKD_IMPORTS = FLOOR_IMPORTS + "; import edgekd.cli, edgekd.serve"
# The daemon's imports one after another, each with what it adds to USS (a module's own dependencies count with it).
IMPORT_STEPS = ("numpy", "onnxruntime", "paho.mqtt.client", "typer", "pydantic", "edgekd.config", "edgekd.model",
                "edgekd.pipeline", "edgekd.daemon", "edgekd.serve", "edgekd.cli")  # fmt: skip


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def sample(pid: int, seconds: int) -> tuple[Footprint, int]:
    """The median footprint over `seconds` one-second samples, and the peak RSS at the end."""
    taken: list[Footprint] = []
    for _ in range(max(1, seconds)):
        f = footprint(pid)
        if f is None:
            raise SystemExit(f"process {pid} has gone or /proc/{pid}/smaps_rollup is unreadable (Linux 4.14+ needed)")
        taken.append(f)
        time.sleep(1.0)
    med = Footprint(*(int(statistics.median(getattr(f, k) for f in taken)) for k in ("rss", "pss", "uss")))
    return med, status_bytes("VmHWM", pid) or 0


def idle_python(code: str, samples: int) -> tuple[Footprint, int]:
    """A Python that ran `code` and then waits: its footprint."""
    script = f"{code}; import sys; print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"python -c {code!r} failed (exit {proc.wait()}): is the venv complete?")
        return sample(proc.pid, samples)
    finally:
        proc.communicate(timeout=10)


def import_steps() -> list[tuple[str, int]]:
    """USS after each of IMPORT_STEPS, imported in order in a fresh Python (the first row: before any)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from edgekd.bench.procfs import footprint\n"
            f"print('start', footprint().uss)\n"
            f"for name in {IMPORT_STEPS!r}:\n    __import__(name); print(name, footprint().uss)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [(name, int(uss)) for name, uss in (line.split() for line in out.splitlines())]


def daemon(model: Path, clip: Path, settle: float, samples: int) -> tuple[Footprint, int, int]:
    """`edgekd serve` on `model`: its footprint after `settle` s, its peak RSS and the results it printed by then."""
    cmd = [sys.executable, "-m", "edgekd", "serve", "--model", str(model), "--source", str(clip),
           "--realtime", "--loop", "--stdout"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        lines = [0]

        def count() -> None:
            assert proc.stdout is not None
            for _ in proc.stdout:
                lines[0] += 1

        reader = threading.Thread(target=count, daemon=True)
        reader.start()
        try:
            time.sleep(settle)
            if proc.poll() is not None or lines[0] == 0:
                err.seek(0)
                raise SystemExit(f"{' '.join(cmd)}: no results after {settle:g} s (exit {proc.poll()}):\n{err.read()[-2000:]}")
            f, peak = sample(proc.pid, samples)
            return f, peak, lines[0]
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            reader.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of serving before memory is read")
    parser.add_argument("--samples", type=int, default=5, help="one-second samples; the median is shown")
    parser.add_argument("--clip", type=Path, default=DEMO_CLIP, help="audio served in real time, looped")
    args = parser.parse_args(argv)

    import stream_paths

    rows: list[tuple[str, Footprint, int, str]] = []
    for label, code in (("python: " + FLOOR_IMPORTS, FLOOR_IMPORTS), ("python: + edgekd.cli, edgekd.serve", EDGEKD_IMPORTS)):
        f, peak = idle_python(code, args.samples)
        rows.append((label, f, peak, ""))
    with tempfile.TemporaryDirectory() as tmp:
        split_model = stream_paths.stream_model(Path(tmp))
        for label, model in (("serve, whole windows", MODEL), ("serve, split path (+ stream parts)", split_model)):
            f, peak, results = daemon(model, args.clip, args.settle, args.samples)
            verdict = "met" if f.uss <= TARGET_USS_BYTES else "NOT met"
            rows.append((f"{label}", f, peak, f"{results} results; USS target {verdict}"))

    import onnxruntime

    print(f"daemon memory: {MODEL.name}, `edgekd serve --source {args.clip.name} --realtime --loop --stdout`, "
          f"read after {args.settle:g} s, median of {args.samples} one-second samples; Python "
          f"{sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}")  # fmt: skip
    print(f"target: USS <= {TARGET_USS_BYTES / 1e6:g} MB ({mib(TARGET_USS_BYTES)} MiB); figures in MiB")
    header = f"{'process':<52} {'RSS':>7} {'PSS':>7} {'USS':>7} {'peak RSS':>9}  note"
    print(header)
    print("-" * len(header))
    for label, f, peak, note in rows:
        print(f"{label:<52} {mib(f.rss):>7} {mib(f.pss):>7} {mib(f.uss):>7} {mib(peak):>9}  {note}")
    floor = rows[0][1]
    for label, f, _, _ in rows[2:]:
        print(f"{label}: USS {mib(f.uss - floor.uss)} MiB above the floor's")
    print()
    print("what each import adds to USS, in order, in a fresh Python (MiB):")
    steps = import_steps()
    for (_, before), (name, after) in zip(steps, steps[1:]):
        print(f"  {name:<20} +{mib(after - before):>5}   {mib(after):>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
