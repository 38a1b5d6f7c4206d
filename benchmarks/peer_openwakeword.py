"""openWakeWord beside edgekd's serve pipeline on the same audio, one core: CPU per audio second.

    .venv/bin/python benchmarks/peer_openwakeword.py [--seconds 90] [--rounds 3] [--clip FILE]

The peer runs in a venv of its own, `.bench/oww-venv` (gitignored; created on first use, reused
after): `openwakeword==0.5.1` from the package registry, the last version that ships its models,
with its own onnxruntime (`--venv` another place, e.g. one made outside the repository). If that install fails (e.g. no tflite-runtime wheel for this Python),
openwakeword is installed with --no-deps plus what its ONNX framework needs, and the run says so.

openWakeWord runs in a child process of that venv (`--inference_framework onnx`: its shipped
melspectrogram, embedding and wake-word ONNX models, one thread each, as it sets them), fed 16-bit
PCM in 80 ms chunks (1280 samples, its recommended size) with 1 wake word (hey_jarvis) and with 5
(hey_jarvis, alexa, hey_mycroft, hey_rhasspy, weather). edgekd runs in this process through
`benchmarks/stream_paths.py`'s code: `edgekd.pipeline.Pipeline` exactly as `edgekd serve` runs it
(64 ms capture chunks, every window classified, every result serialised to JSON; no broker) with 1
and 5 Wav2Tiny keyword models, whole windows at an 80 ms hop and the split path at 75 ms (its hop
rounded to whole 15 ms frames); with `--stream-model FILE` also the stateful path of that streaming
model (`streamtcn-keyword.onnx`) x1 / x5 at the split path's hop. The split and stateful paths run
twice: publishing every window, and with the models' own defaults (what `serve` does with no config:
the operating point in wav2tiny-keyword.onnx, events only, its smoothing rescaled to the hop), where
a window that is neither a detection nor a change of label is classified but not published. Both processes are pinned to CPU 0 and measure their own process
CPU time (`time.process_time`) over the whole audio, models loaded and warmed up beforehand. The
configurations run in interleaved rounds, the order alternating, and the median of each is shown.
Not a test: timings vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "oww-venv"
OWW_VERSION = "0.5.1"
# openwakeword 0.5.1's own dependencies less tflite-runtime, which only its tflite framework imports.
OWW_ONNX_DEPS = ("onnxruntime", "numpy", "scipy", "scikit-learn", "tqdm")
RATE = 16000
CHUNK = 1280  # openWakeWord's 80 ms
WAKEWORDS = ("hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy", "weather")
COUNTS = (1, 5)
HOP_MS = 80.0
WARMUP_S = 5.0


# ---- the openWakeWord side: runs under the peer venv's Python, needs only numpy and openwakeword ----


def oww_worker(audio_path: str, names: list[str]) -> int:
    """Serve commands on stdin: a wake-word count -> one JSON line with the CPU seconds over all the audio."""
    from importlib.metadata import version

    import onnxruntime
    from openwakeword.model import Model as OwwModel

    os.sched_setaffinity(0, {0})
    pcm = np.load(audio_path)
    models = {n: OwwModel(wakeword_models=names[:n], inference_framework="onnx") for n in COUNTS}
    for m in models.values():
        for pos in range(0, int(WARMUP_S * RATE), CHUNK):
            m.predict(pcm[pos : pos + CHUNK])
    facts = {"openwakeword": version("openwakeword"), "onnxruntime": onnxruntime.__version__,
             "python": sys.version.split()[0], "models": {n: sorted(m.models) for n, m in models.items()}}  # fmt: skip
    print(json.dumps(facts), flush=True)
    for line in iter(sys.stdin.readline, ""):
        m = models[int(line)]
        m.reset()
        chunks = 0
        cpu0 = time.process_time()
        for pos in range(0, len(pcm) - CHUNK + 1, CHUNK):
            m.predict(pcm[pos : pos + CHUNK])
            chunks += 1
        cpu = time.process_time() - cpu0
        print(json.dumps({"cpu": cpu, "chunks": chunks}), flush=True)
    return 0


# ---- the driver: the shared .venv with edgekd ----


def pip_quiet(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)  # fmt: skip


def ensure_venv(venv: Path = VENV) -> tuple[Path, str]:
    """The peer venv's Python, creating the venv and installing openwakeword on first use; and how it was installed."""
    python = venv / "bin" / "python"
    marker = venv / "edgekd-install.txt"
    if python.exists() and marker.exists():
        return python, marker.read_text().strip()
    print(f"creating {venv} with openwakeword=={OWW_VERSION} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    done = pip_quiet(python, f"openwakeword=={OWW_VERSION}")
    how = f"pip install openwakeword=={OWW_VERSION} (with its dependencies)"
    if done.returncode != 0:
        print(f"pip install openwakeword=={OWW_VERSION} failed; trying --no-deps plus the ONNX framework's "
              f"dependencies:\n{done.stderr[-2000:]}", file=sys.stderr)  # fmt: skip
        fallback = pip_quiet(python, "--no-deps", f"openwakeword=={OWW_VERSION}")
        deps = pip_quiet(python, *OWW_ONNX_DEPS)
        if fallback.returncode != 0 or deps.returncode != 0:
            raise SystemExit(f"cannot install openwakeword=={OWW_VERSION} into {venv}: "
                             f"{(fallback.stderr or deps.stderr)[-2000:]}\nfix: check the package index, "
                             f"or delete {venv} and rerun")  # fmt: skip
        how = (f"pip install --no-deps openwakeword=={OWW_VERSION} plus {' '.join(OWW_ONNX_DEPS)} "
               f"(the full install failed)")  # fmt: skip
    marker.write_text(how + "\n")
    return python, how


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


class OwwChild:
    """The openWakeWord worker process, loaded once and asked for one measurement at a time."""

    def __init__(self, python: Path, audio_path: Path, names: tuple[str, ...]) -> None:
        cmd = [str(python), str(Path(__file__).resolve()), "--oww-worker", str(audio_path), "--wakewords", *names]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.facts = self._reply()

    def _reply(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the openWakeWord worker exited ({self.proc.wait()}); its stderr is above")
        return json.loads(line)

    def measure(self, count: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()
        return float(self._reply()["cpu"])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def marginal(one: float, five: float) -> float:
    """Cost of each model beyond the first, from the 1- and 5-model figures."""
    return (five - one) / (max(COUNTS) - min(COUNTS))


def table(ms: dict[tuple[str, int], float], labels: dict[str, str]) -> str:
    """ms CPU per audio second of each side for 1 and 5 models, the ratios to openWakeWord's, the marginal cost."""
    header = (f"{'':<44} {'1 model':>9} {'5 models':>9} {'per extra':>10} "
              f"{'1: /oww':>8} {'5: /oww':>8} {'extra: /oww':>11}")  # fmt: skip
    lines = [header, "-" * len(header)]
    oww1, oww5 = ms[("oww", 1)], ms[("oww", 5)]
    oww_extra = marginal(oww1, oww5)
    for key, label in labels.items():
        one, five = ms[(key, 1)], ms[(key, 5)]
        extra = marginal(one, five)
        lines.append(f"{label:<44} {one:>9.2f} {five:>9.2f} {extra:>10.2f} "
                     f"{one / oww1:>7.2f}x {five / oww5:>7.2f}x {extra / oww_extra:>10.2f}x")  # fmt: skip
    return "\n".join(lines)


def machine() -> str:
    from edgekd.bench.device import device_facts

    f = device_facts()
    mem = f"{f['memory_bytes'] / 2**30:.0f} GiB" if f.get("memory_bytes") else "? GiB"
    return f"{f['cpu']}, {f['logical_cpus']} logical CPUs, {mem}, {f['os']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="audio seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown")
    parser.add_argument("--clip", type=Path, default=None, help="audio to loop (default: the bundled speech clips)")
    parser.add_argument("--venv", type=Path, default=VENV, help="the peer's venv (created if missing)")
    parser.add_argument("--stream-model", type=Path, default=None,
                        help="a model with a step graph (edgekd.stream): its stateful path as a third edgekd side")
    parser.add_argument("--oww-worker", metavar="AUDIO_NPY", help=argparse.SUPPRESS)
    parser.add_argument("--wakewords", nargs="+", default=list(WAKEWORDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.oww_worker:
        return oww_worker(args.oww_worker, args.wakewords)

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import onnxruntime

    import stream_paths as sp
    from edgekd.postprocess import PostConfig
    from edgekd.split import load_split, shared_hop

    python, how = ensure_venv(args.venv)
    pinned = sp.pin_to_one_core()
    x = sp.audio(args.seconds, args.clip)
    models = sp.stream_models(max(COUNTS))
    spec = load_split(models[0]).spec  # type: ignore[union-attr]
    whole_hop = round(HOP_MS * RATE / 1e3)
    split_hop = shared_hop(whole_hop, spec.hop, RATE)
    with tempfile.TemporaryDirectory() as tmp:
        audio_path = Path(tmp) / "audio.npy"
        np.save(audio_path, to_pcm16(x))
        oww = OwwChild(python, audio_path, tuple(args.wakewords))
        edgekd_runs = {"whole": (models, whole_hop, False), "split": (models, split_hop, True)}
        defaults = sp.keyword_defaults(split_hop)  # the shipped keyword model's operating point: events only
        edgekd_runs: dict[str, tuple[list, int, bool, PostConfig | None]] = {
            "whole": (models, whole_hop, False, None), "split": (models, split_hop, True, None),
            "split-op": (models, split_hop, True, defaults)}  # fmt: skip
        if args.stream_model is not None:
            stateful = sp.streaming_models(args.stream_model, max(COUNTS))[0]
            edgekd_runs["stateful"] = (stateful, split_hop, True, None)
            edgekd_runs["stateful-op"] = (stateful, split_hop, True, defaults)
        warm = x[: int(WARMUP_S * RATE)]
        for n in COUNTS:
            for group, hop, split, post in edgekd_runs.values():
                sp.run_once(group[:n], hop, split, warm, post)
        keys = [(side, n) for n in COUNTS for side in ("oww", *edgekd_runs)]
        cpu: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
        windows: dict[tuple[str, int], int] = {}
        for round_no in range(args.rounds):
            for side, n in keys if round_no % 2 == 0 else keys[::-1]:
                if side == "oww":
                    cpu[(side, n)].append(oww.measure(n))
                else:
                    group, hop, split, post = edgekd_runs[side]
                    seconds, count = sp.run_once(group[:n], hop, split, x, post)
                    cpu[(side, n)].append(seconds)
                    windows[(side, n)] = count
        oww.close()
    audio_s = len(x) / RATE
    ms = {k: statistics.median(v) * 1e3 / audio_s for k, v in cpu.items()}
    facts = oww.facts
    print(f"peer: openWakeWord {facts['openwakeword']} (onnxruntime {facts['onnxruntime']}, Python {facts['python']}, "
          f"{args.venv.relative_to(ROOT) if args.venv.is_relative_to(ROOT) else args.venv}: {how}) against edgekd "
          f"(onnxruntime {onnxruntime.__version__}, Python {sys.version.split()[0]})")  # fmt: skip
    print(f"machine: {machine()}; both sides {pinned}, onnxruntime 1 thread")
    print(f"audio: {audio_s:g} s ({args.clip or 'the bundled speech clips'}, looped), median of {args.rounds} "
          f"interleaved rounds; ms of process CPU per audio second")  # fmt: skip
    print(f"openWakeWord: 80 ms chunks, --inference_framework onnx, wake words {', '.join(args.wakewords[:1])} / "
          f"{', '.join(args.wakewords[: max(COUNTS)])}")  # fmt: skip
    print(f"edgekd: serve's pipeline, Wav2Tiny keyword ({sp.MODEL.name} + stream parts) x1 / x5, "
          f"{windows[('whole', 1)]} windows per model whole, {windows[('split', 1)]} split")  # fmt: skip
    print()
    labels = {"oww": "openWakeWord (80 ms chunks)",
              "whole": f"edgekd whole windows ({1e3 * whole_hop / RATE:g} ms hop)",
              "split": f"edgekd split path ({1e3 * split_hop / RATE:g} ms hop)"}  # fmt: skip
    labels["split-op"] = f"  the same, the model's own defaults"
    if "stateful" in edgekd_runs:
        labels["stateful"] = f"edgekd stateful {args.stream_model.stem} ({1e3 * split_hop / RATE:g} ms)"
        labels["stateful-op"] = f"  the same, the model's own defaults"
    print(table(ms, labels))
    print(f"(rows without a note publish every window as JSON; \"the model's own defaults\" is serve with no config: "
          f"the operating point in wav2tiny-keyword.onnx, {defaults.mode} only, smoothing {defaults.smoothing} windows "
          f"at this hop, threshold {defaults.threshold:.4g}, refractory {defaults.refractory_s:g} s, background "
          f"{', '.join(defaults.background)})")  # fmt: skip
    print()
    print("every run, ms CPU per audio s: "
          + "; ".join(f"{side} x{n} " + "/".join(f"{v * 1e3 / audio_s:.2f}" for v in vals)
                      for (side, n), vals in cpu.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
