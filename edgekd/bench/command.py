"""`edgekd bench MODEL... `: latency, throughput, memory and cost of ONNX models, side by side."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekd.bench.e2e import E2EConfig, E2EError, default_clip
from edgekd.bench.measure import Budget
from edgekd.bench.plot import MATPLOTLIB_MISSING, PlotUnavailable, plot_available, write_plot
from edgekd.bench.progress import ProgressLine
from edgekd.bench.report import format_table
from edgekd.bench.run import BenchConfig, run_bench
from edgekd.model import PROVIDER_CHOICES, ModelRunError
from edgekd.catalog import locate
from edgekd.contract import ModelContractError
from edgekd.printable import printable, terminal_json

log = logging.getLogger(__name__)

USER_ERROR = 2
_PROVIDERS = ("auto", *PROVIDER_CHOICES)


def _fail(message: str) -> typer.Exit:
    print(f"edgekd bench: {printable(message)}", file=sys.stderr)
    return typer.Exit(USER_ERROR)


def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX model files (edgekd contract) or models' names; one column each.")],
    baseline: Annotated[
        Optional[Path], typer.Option(help="Model the ratios are taken to (default: the first); benched too.")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime intra-op threads per session.")] = 1,
    hop_ms: Annotated[float, typer.Option(min=0.001, help="Hop for 'models per core': a new window every hop.")] = 250.0,
    seconds: Annotated[float, typer.Option(min=0.001, max=3600, help="Timed wall seconds per model (after warm-up).")] = 5.0,
    windows: Annotated[
        Optional[int], typer.Option(min=1, help="Time exactly this many windows per model instead of --seconds.")
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed windows per model before timing.")] = 10,
    provider: Annotated[
        list[str],
        typer.Option(help="cpu, cuda, tensorrt, or auto (CPU plus any GPU provider present); repeatable."),
    ] = ["auto"],  # noqa: B006  (typer needs a literal default)
    memory: Annotated[bool, typer.Option(help="Measure peak RSS per model in a fresh process.")] = True,
    peak: Annotated[bool, typer.Option(help="Measure the core's FP32/INT8 GEMM peak for '% of peak'.")] = True,
    stream: Annotated[
        bool,
        typer.Option(help="Also time whole windows against the split path (shared front end + body) at --hop-ms."),
    ] = True,
    e2e: Annotated[
        bool, typer.Option("--e2e", help="Also run each model through `edgekd serve` and a broker to a subscriber.")
    ] = False,
    clip: Annotated[Optional[Path], typer.Option(help="Clip for --e2e, looped in real time (default: the demo clip).")] = None,
    e2e_seconds: Annotated[float, typer.Option(min=1.0, max=3600, help="Audio seconds measured per model with --e2e.")] = 15.0,
    broker: Annotated[str, typer.Option(help="Broker for --e2e: 'embedded' or mqtt://HOST[:PORT].")] = "embedded",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    save: Annotated[
        Optional[Path], typer.Option(help="Also write the JSON report to this file (the table still prints).")
    ] = None,
    plot: Annotated[
        Optional[Path], typer.Option(help="Write a PNG: latency distributions and a comparison chart.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Measure ONNX models side by side on this device: latency, throughput, memory, MACs, % of peak."""
    bad = [p for p in provider if p not in _PROVIDERS]
    if bad:
        raise _fail(f"unknown --provider {', '.join(bad)}; choose from {', '.join(_PROVIDERS)}")
    for option, target in (("--save", save), ("--plot", plot)):
        if target is not None and not target.parent.is_dir():
            raise _fail(f"{option} {target}: folder {target.parent} does not exist")
    if plot is not None:
        if not plot_available():
            raise _fail(MATPLOTLIB_MISSING)
    e2e_cfg = None
    if e2e:
        e2e_cfg = E2EConfig(clip=clip or default_clip(), seconds=e2e_seconds, broker=broker, threads=threads,
                            hop_s=hop_ms / 1e3)  # fmt: skip
        if not e2e_cfg.clip.is_file():
            raise _fail(f"--clip {e2e_cfg.clip}: no such file")
    try:
        paths = tuple(locate(m) for m in models)  # a path, or a model's name (edgekd.catalog)
        baseline = locate(baseline) if baseline is not None else None
    except ModelContractError as exc:
        raise _fail(str(exc)) from None
    cfg = BenchConfig(
        models=paths,
        baseline=baseline,
        threads=threads,
        hop_ms=hop_ms,
        budget=Budget(seconds=seconds, windows=windows, warmup=warmup),
        providers=tuple(provider),
        memory=memory,
        peak=peak,
        e2e=e2e_cfg,
        stream=stream,
    )
    progress = ProgressLine(enabled=not quiet)
    try:
        run = run_bench(cfg, progress)
    except (ModelContractError, ModelRunError, E2EError) as exc:
        progress.close()
        raise _fail(str(exc)) from None
    if json_out:
        print(terminal_json(run.report, indent=2))
    else:
        print("\n".join(printable(line) for line in format_table(run.report).splitlines()))
    if save is not None:
        try:
            save.write_text(json.dumps(run.report, indent=2) + "\n")
        except OSError as exc:
            raise _fail(f"--save {save}: {exc}") from None
    if plot is not None:
        try:
            write_plot(plot, run.report, run.latencies_ns)
        except (PlotUnavailable, OSError) as exc:
            raise _fail(f"--plot {plot}: {exc}") from None
        if not quiet:
            print(f"bench: wrote {plot}", file=sys.stderr)
