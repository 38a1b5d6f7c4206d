"""Whole windows, the split path (shared front end + body) and the stateful path (shared front end +
step graph), through serve's own pipeline.

    .venv/bin/python benchmarks/stream_paths.py [--seconds 60] [--rounds 3] [--profile]
        [--stream-model models/streamtcn-keyword.onnx]

Pinned to one core (CPU 0, as `taskset -c 0`), onnxruntime on one thread. For 1 and 5 Wav2Tiny
keyword models at 80 ms and 250 ms hops, the same audio goes through `edgekd.pipeline.Pipeline`
exactly as `edgekd serve` runs it (capture-sized chunks of 64 ms, every window classified, the
energy gate off, every result built and serialised to JSON as the MQTT publisher does; no broker)
once with whole windows and once with the split path, and the process CPU time per audio second is
printed side by side. Both paths run at the hop the split path uses (rounded to whole 15 ms frames:
80 -> 75 ms, 250 -> 255 ms), so they classify the same windows. Configurations run in interleaved
rounds and the median of each is shown, so a shared machine's drift hits all alike.

The models are the shipped `models/wav2tiny-keyword.onnx` with its stream parts added
(`edgekd_train.stream_parts`, into a temp dir; models/ is not changed); five models are five sessions of
it, as five keyword files would be. With `--stream-model` (a file with `edgekd.stream`, e.g. the
streaming keyword student `streamtcn`), that model runs too, in the same rounds: whole windows, its
split path (a copy of the file without its step graph) and its stateful path, all at the same hop. The audio is the bundled speech clips, looped (--clip for
another file). `--profile` adds a cProfile of one model at 250 ms, both paths: where serve's time
goes per window. Not a test: timings vary with the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd.audio.decode import decode_file  # noqa: E402
from edgekd.audio.sources import chunk_frames  # noqa: E402
from edgekd.model import Model  # noqa: E402
from edgekd.payloads import ResultPayload  # noqa: E402
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec  # noqa: E402
from edgekd.postprocess import PostConfig  # noqa: E402
from edgekd.split import load_split, shared_hop  # noqa: E402
from edgekd.stateful import StatefulScorer, load_stream  # noqa: E402

ASSETS = sorted((ROOT / "edgekd" / "assets").glob("*.flac"))
MODEL = ROOT / "models" / "wav2tiny-keyword.onnx"
RATE = 16000
COUNTS = (1, 5)
HOPS_MS = (80.0, 250.0)


class JsonSink:
    """Serve's publishing work without a broker: each result becomes the JSON the publisher queues."""

    def __init__(self) -> None:
        self.results = 0
        self.bytes = 0

    def publish_result(self, result: ResultPayload) -> None:
        self.results += 1
        self.bytes += len(result.to_json())

    def publish_stats(self, stats) -> None:
        pass

    def close(self, timeout: float = 5.0) -> None:
        pass


def pin_to_one_core() -> str:
    try:
        os.sched_setaffinity(0, {0})
        return "pinned to CPU 0 (as taskset -c 0)"
    except (AttributeError, OSError) as exc:
        return f"not pinned ({exc})"


def audio(seconds: float, clip: Path | None) -> np.ndarray:
    parts = [decode_file(p, RATE).samples for p in ([clip] if clip else ASSETS)]
    one = np.concatenate(parts)
    reps = int(np.ceil(seconds * RATE / len(one)))
    return np.tile(one, reps)[: int(seconds * RATE)].astype(np.float32)


def stream_model(tmp: Path) -> Path:
    from edgekd_train.stream_parts import add_stream_parts

    out = tmp / MODEL.name
    add_stream_parts(MODEL, out)
    return out


def stream_models(count: int) -> list[Model]:
    """`count` sessions of the shipped keyword model with its stream parts, each passing the split load check."""
    with tempfile.TemporaryDirectory() as tmp:
        path = stream_model(Path(tmp))
        models = [Model(path) for _ in range(count)]
    for m in models:
        assert load_split(m) is not None, "the split path did not pass its load check"
    return models


def without_step_graph(src: Path, dst: Path) -> Path:
    """A copy of a file with `edgekd.stream` removed: its split path, for comparison."""
    import onnx

    from edgekd.contract import KEY_STREAM

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props if p.key != KEY_STREAM}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


def streaming_models(path: Path, count: int) -> tuple[list[Model], list[Model]]:
    """`count` sessions of a streaming student with its step graph, and `count` of it without (split path)."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = without_step_graph(path, Path(tmp) / path.name)
        stateful = [Model(path) for _ in range(count)]
        split = [Model(bare) for _ in range(count)]
    for m in stateful:
        assert load_stream(m) is not None, f"{path}: the stateful path did not pass its load check"
    for m in split:
        assert load_split(m) is not None, f"{path}: the split path did not pass its load check"
    return stateful, split


def keyword_defaults(hop: int) -> PostConfig:
    """What `serve` runs the shipped keyword model with at `hop` by default: the operating point in
    its file (events only, its threshold, refractory period and background labels, its smoothing
    rescaled to the hop), resolved as serve resolves it."""
    from edgekd.config import ModelSettings, Settings
    from edgekd.operating_point import resolve

    meta = Model(MODEL).meta
    return resolve(Settings(), ModelSettings(path=str(MODEL)), meta, hop_override_s=hop / RATE).post


def pipeline(models: list[Model], hop: int, split: bool, post: PostConfig | None = None) -> tuple[Pipeline, JsonSink]:
    """`post`: every model's post-processing (default PostConfig(): every window published)."""
    runners = [ModelRunner(m, RunnerSpec(hop, post or PostConfig(), gate_db=None)) for m in models]
    sink = JsonSink()
    return Pipeline(runners, RATE, sink, "bench", split=split), sink


def run_once(models: list[Model], hop: int, split: bool, x: np.ndarray, post: PostConfig | None = None) -> tuple[float, int]:
    """CPU seconds to serve `x`, and the number of windows classified."""
    pipe, sink = pipeline(models, hop, split, post)
    step = chunk_frames(RATE)
    cpu0 = time.process_time()
    for pos in range(0, len(x), step):
        pipe.feed(x[pos : pos + step])
    cpu = time.process_time() - cpu0
    if split:
        assert all(r.split is not None and r.split.scored == r.counters.windows for r in pipe.runners)
        stateful = [isinstance(r.split, StatefulScorer) for r in pipe.runners]
        assert all(stateful) == any(stateful) == (load_stream(models[0]) is not None)
    return cpu, sum(r.counters.windows for r in pipe.runners)  # with PostConfig() also the results published


def profile(models: list[Model], hop: int, x: np.ndarray, split: bool, top: int) -> str:
    pipe, sink = pipeline(models, hop, split)
    step = chunk_frames(RATE)
    prof = cProfile.Profile()
    prof.enable()
    for pos in range(0, len(x), step):
        pipe.feed(x[pos : pos + step])
    prof.disable()
    windows = sum(r.counters.windows for r in pipe.runners)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    out.write(f"{'split path' if split else 'whole windows'}: {windows} windows, {total * 1e3 / windows:.3f} ms "
              f"profiled time per window (cProfile's overhead included)\n")  # fmt: skip
    out.write(breakdown(stats, windows, total))
    if top:
        stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# Where serve's time goes, by the functions that do each part (cumulative time, so nested calls count once).
PARTS = (
    ("onnxruntime run (whole graph or body)", "onnxruntime_inference_collection.py", "run"),
    ("front end (numpy log-mel)", "edgekd/frontend.py", "_compute"),
    ("front end: taking samples", "edgekd/split.py", "push"),
    ("audio health (NaN, clipping, DC)", "edgekd/audio/health.py", "check"),
    ("resampler (pass-through here)", "edgekd/audio/windowing.py", "process"),
    ("windowing", "edgekd/audio/windowing.py", "push"),
    ("scores (softmax)", "edgekd/model.py", "logits_to_scores"),
    ("post-processing", "edgekd/postprocess.py", "step"),
    ("result payload", "edgekd/pipeline.py", "result"),
    ("JSON (as the publisher queues it)", "benchmarks/stream_paths.py", "publish_result"),
)


def breakdown(stats: pstats.Stats, windows: int, total: float) -> str:
    table = stats.stats  # type: ignore[attr-defined]
    lines, counted = [], 0.0
    for label, file, func in PARTS:
        ct = sum(v[3] for (f, _, name), v in table.items() if name == func and f.endswith(file))
        counted += ct
        lines.append(f"  {label:<40} {ct * 1e3 / windows:7.3f} ms/window {100 * ct / total:5.1f} %")
    rest = total - counted
    lines.append(f"  {'the rest (pipeline bookkeeping, counters)':<40} {rest * 1e3 / windows:7.3f} ms/window "
                 f"{100 * rest / total:5.1f} %")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown")
    parser.add_argument("--clip", type=Path, default=None, help="audio to loop (default: the bundled clips)")
    parser.add_argument("--stream-model", type=Path, default=None,
                        help="a model with a step graph (edgekd.stream): its whole, split and stateful paths too")
    parser.add_argument("--profile", action="store_true", help="also cProfile 1 model at 250 ms, both paths")
    parser.add_argument("--top", type=int, default=18, help="functions shown per profile")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pinned = pin_to_one_core()
    x = audio(args.seconds, args.clip)
    n_max = max(COUNTS)
    models = stream_models(n_max)
    spec = load_split(models[0]).spec  # type: ignore[union-attr]
    # path name -> (models, split)
    paths: dict[str, tuple[list[Model], bool]] = {"whole": (models, False), "split": (models, True)}
    if args.stream_model is not None:
        stateful, bare = streaming_models(args.stream_model, n_max)
        if load_stream(stateful[0]).spec.canonical() != spec.canonical():  # type: ignore[union-attr]
            raise SystemExit(f"{args.stream_model}: its front end differs from Wav2Tiny's; the hops would differ")
        paths.update({"stream whole": (stateful, False), "stream split": (bare, True), "stream stateful": (stateful, True)})
    configs = [(n, hop_ms) for hop_ms in HOPS_MS for n in COUNTS]
    cpu: dict[tuple[int, float, str], list[float]] = {(n, h, p): [] for n, h in configs for p in paths}
    results: dict[tuple[int, float, str], int] = {}
    for round_no in range(args.rounds):
        names = list(paths) if round_no % 2 == 0 else list(paths)[::-1]
        for n, hop_ms in configs:
            for name in names:
                group, split = paths[name]
                hop = shared_hop(round(hop_ms * RATE / 1e3), spec.hop, RATE)
                seconds, count = run_once(group[:n], hop, split, x)
                cpu[(n, hop_ms, name)].append(seconds)
                results[(n, hop_ms, name)] = count
    audio_s = len(x) / RATE
    print(f"stream paths: serve's pipeline, {audio_s:g} s of audio per run, median of {args.rounds} interleaved "
          f"rounds; {pinned}; onnxruntime 1 thread; ms of process CPU per audio second")  # fmt: skip
    print(f"whole / split: Wav2Tiny keyword ({MODEL.name} + stream parts)"
          + (f"; stream *: {args.stream_model.name} (whole windows, split path without its step graph, "
             "stateful path)" if args.stream_model else ""))  # fmt: skip
    header = f"{'models':>6} {'hop':>14} {'windows':>8} " + " ".join(f"{p:>16}" for p in paths) + f" {'whole/split':>12}"
    print(header)
    print("-" * len(header))
    for n, hop_ms in configs:
        hop = shared_hop(round(hop_ms * RATE / 1e3), spec.hop, RATE)
        ms = {p: statistics.median(cpu[(n, hop_ms, p)]) * 1e3 / audio_s for p in paths}
        assert len({results[(n, hop_ms, p)] for p in paths}) == 1  # every path classified the same windows
        hop_text = f"{hop_ms:g}->{1e3 * hop / RATE:g} ms"
        print(f"{n:>6} {hop_text:>14} {results[(n, hop_ms, 'split')]:>8} " + " ".join(f"{ms[p]:>16.3f}" for p in paths)
              + f" {ms['whole'] / ms['split']:>11.2f}x")  # fmt: skip
    if len(COUNTS) > 1:
        lo, hi = min(COUNTS), max(COUNTS)
        print(f"per extra model (({hi} - {lo}) / {hi - lo}), ms CPU per audio s:")
        for hop_ms in HOPS_MS:
            extra = {p: (statistics.median(cpu[(hi, hop_ms, p)]) - statistics.median(cpu[(lo, hop_ms, p)]))
                        * 1e3 / audio_s / (hi - lo) for p in paths}  # fmt: skip
            print(f"  {hop_ms:g} ms: " + ", ".join(f"{p} {v:.3f}" for p, v in extra.items()))
    print("every run: all rounds' CPU ms per audio s: "
          + "; ".join(f"{n}x{h:g}ms {p} " + "/".join(f"{v * 1e3 / audio_s:.2f}" for v in vals)
                      for (n, h, p), vals in cpu.items()))  # fmt: skip
    if args.profile:
        hop = shared_hop(round(250 * RATE / 1e3), spec.hop, RATE)
        for split in (False, True):
            print()
            print(profile(models[:1], hop, x, split, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
