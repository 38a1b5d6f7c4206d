"""Peak resident memory of one inference session, measured in a fresh Python process per model.

A process's peak RSS only ever grows, so measuring several models in one process would charge
each with the ones before it. Each model is therefore loaded in its own child process
(`python -m edgekd.bench.memory MODEL`), which reports:

- `baseline_rss_bytes`: resident set after importing numpy, onnxruntime and edgekd, before loading;
- `peak_rss_bytes`: the process's peak resident set (Linux `VmHWM`) after loading the model and
  running `MEMORY_WINDOWS` windows;
- `session_peak_bytes`: the difference, i.e. what the session itself costs at its peak.

Without /proc (macOS) the peak comes from `getrusage`; on Windows memory is reported unavailable.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekd.bench.procfs import status_bytes

log = logging.getLogger(__name__)

MEMORY_WINDOWS = 20
TIMEOUT_S = 600.0


def _peak_rss() -> int | None:
    peak = status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:
        return None
    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(raw if sys.platform == "darwin" else raw * 1024)  # bytes on macOS, KiB elsewhere


def _current_rss() -> int | None:
    current = status_bytes("VmRSS")
    return current if current is not None else _peak_rss()


def probe(path: str, threads: int, providers: list[str]) -> dict[str, Any]:
    """Run in the child: load one model, run a few windows, report resident memory."""
    import numpy as np  # noqa: F401  (imported before the baseline on purpose)
    import onnxruntime  # noqa: F401

    from edgekd.bench.measure import noise_window
    from edgekd.model import Model, ModelRuntimeOptions

    baseline = _current_rss()
    model = Model(path, ModelRuntimeOptions(threads=threads, providers=tuple(providers)))
    window = noise_window(model.meta.window_samples)
    for _ in range(MEMORY_WINDOWS):
        model.logits(window)
    peak = _peak_rss()
    return {
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "session_peak_bytes": (peak - baseline) if (peak is not None and baseline is not None) else None,
        "method": f"fresh process per model; peak RSS after load + {MEMORY_WINDOWS} windows, minus RSS after imports",
    }


def measure_in_subprocess(path: Path, threads: int, providers: list[str]) -> dict[str, Any]:
    """Peak RSS figures for one model, from a fresh child process."""
    cmd = [sys.executable, "-m", "edgekd.bench.memory", str(path), str(threads), ",".join(providers)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe of {path} took over {TIMEOUT_S:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe of {path} failed: {last}"}
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError):
        return {"error": f"memory probe of {path} printed no JSON"}


def main(argv: list[str]) -> int:
    path, threads, providers = argv[0], int(argv[1]), argv[2].split(",")
    print(json.dumps(probe(path, threads, providers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
