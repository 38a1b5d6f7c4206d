"""The `edgekd` command line. Each command parses flags, loads the config once, and hands over.

User errors (a bad model, config, audio file or broker URL) print one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgekd import __version__

USER_ERROR = 2
# The training side is its own distribution (edgekd-train, from the folder train/); the extra brings it.
TRAIN_MISSING = (
    "edgekd train needs the training side (torch, transformers), which is not installed: "
    "pip install 'edgekd[train]' (from a clone: scripts/setup.sh --dev)"
)
_TRAIN_MODULES = {"torch", "transformers", "accelerate", "onnx", "matplotlib", "tqdm"}

app = typer.Typer(
    name="edgekd",
    help="Tiny distilled audio classifiers on the device, results over MQTT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("edgekd")


class UserError(Exception):
    """Raised by commands for a mistake the user can fix; printed as one line."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from edgekd.audio.decode import AudioError
    from edgekd.config import ConfigError
    from edgekd.contract import ModelContractError
    from edgekd.sink import OutputClosedError

    types: list[type[BaseException]] = [UserError, AudioError, ConfigError, ModelContractError, OutputClosedError]
    try:
        from edgekd.mqtt.settings import MqttCredentialsError
        from edgekd.mqtt.topics import TopicError
        from edgekd.mqtt.url import BrokerUrlError

        from edgekd.mqtt.outbox import OutboxError

        types += [BrokerUrlError, MqttCredentialsError, TopicError, OutboxError]
    except ImportError:
        pass
    try:
        from edgekd.mqtt.connection import BrokerRefusedError, BrokerUnreachableError

        types += [BrokerRefusedError, BrokerUnreachableError]
    except ImportError:
        pass
    from edgekd.model import ModelRunError  # serve: every model stopped for failing at run time

    types.append(ModelRunError)
    return tuple(types)


def setup_logging(level: str) -> None:
    from edgekd.printable import PrintableFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, value = v.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{flag} {v!r}: expected NAME=VALUE")
        out[key] = value
    return out


HOP_FORMS = "SECONDS (with one model) or NAME=SECONDS, NAME being a model's name, task or file stem"


def _seconds(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag}: SECONDS must be a number, e.g. 0.25") from None


def _hops(values: list[str] | None) -> tuple[dict[str, float], float | None]:
    """Named hops (`--hop emotion=0.5`) and a bare one (`--hop 0.5`, for a single model)."""
    named: dict[str, float] = {}
    bare: float | None = None
    for v in values or []:
        key, sep, value = v.partition("=")
        if not sep:
            try:
                bare = float(v)
            except ValueError:
                raise UserError(f"--hop {v!r}: expected {HOP_FORMS}") from None
            continue
        if not key or not value:
            raise UserError(f"--hop {v!r}: expected {HOP_FORMS}")
        named[key] = _seconds(value, f"--hop {v}")
    return named, bare


def _gates(values: list[str] | None) -> dict[str, str]:
    out = _pairs(values, "--gate")
    for key, value in out.items():
        other, colon, label = value.partition(":")
        if not colon or not other.strip() or not label.strip() or ":" in label:
            raise UserError(
                f"--gate {key}={value}: expected MODEL_OR_TASK=OTHER:LABEL, i.e. run {key} only while the model OTHER "
                f"detects LABEL, e.g. --gate covid=cough:cough"
            )
    return out


def _gate_db(value: str | None) -> float | str | None:
    if value is None or value.lower() == "off":
        return None if value is None else "off"
    try:
        return float(value)
    except ValueError:
        raise UserError(f"--gate-db {value!r}: expected a dBFS number like -60, or 'off'") from None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Drop unset flags (None, empty) so that they do not override the config file."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _clean(v)
        if v is None or v == {} or v == []:
            continue
        out[k] = v
    return out


def _model_entries(paths: list[Path] | None, file_models: list) -> list[dict[str, Any]] | None:
    """--model paths, keeping any per-model settings the config file has for the same path."""
    if not paths:
        return None
    by_path = {m.get("path"): m for m in file_models if isinstance(m, dict)}
    return [by_path.get(str(p), {"path": str(p)}) for p in paths]


def _settings(config: Path | None, overrides: dict[str, Any], bare_hop: float | None = None):
    from edgekd.config import load_settings, read_toml

    wants_file_models = overrides.get("models") or bare_hop is not None
    file_models = read_toml(config).get("models", []) if config and wants_file_models else []
    if overrides.get("models"):
        overrides["models"] = _model_entries(overrides["models"], file_models)
    if bare_hop is not None:
        overrides["models"] = _with_hop(overrides.get("models") or file_models, bare_hop)
    return load_settings(config, _clean(overrides))


def _with_hop(entries: list, hop: float) -> list | None:
    """`--hop SECONDS` applies to the one model; with several it must say which."""
    if not isinstance(entries, list) or not entries:
        return None  # no model at all: that error comes next, and says what to do
    if len(entries) > 1:
        stems = [Path(str(e.get("path", "?"))).stem if isinstance(e, dict) else "?" for e in entries]
        raise UserError(
            f"--hop {hop:g}: {len(entries)} models are loaded ({', '.join(stems)}); say which one: "
            f"--hop NAME={hop:g}, NAME being a model's name, task or file stem (e.g. --hop {stems[0]}={hop:g})"
        )
    entry = entries[0]
    return [{**entry, "hop": hop}] if isinstance(entry, dict) else entries


# Shared option types
# readable=False on paths: click's own check prints a box; edgekd says what the path is and the fix
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file.", readable=False)]
ModelsOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--model", "-m", help="ONNX file, or a model's name (`edgekd models`); repeatable.", readable=False),
]
HopOpt = Annotated[
    Optional[list[str]],
    typer.Option("--hop", help="SECONDS between windows (one model), or MODEL_OR_TASK=SECONDS (repeatable)."),
]
GateDbOpt = Annotated[Optional[str], typer.Option("--gate-db", help="Skip windows quieter than this dBFS, or 'off'.")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="Publish 'all' windows or only 'events'.")]
SmoothOpt = Annotated[Optional[int], typer.Option("--smoothing", help="Average scores over N windows.")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--threshold", help="Detection threshold for every label.")]
RefractoryOpt = Annotated[Optional[float], typer.Option("--refractory", help="Seconds before a label counts again.")]
GateOpt = Annotated[
    Optional[list[str]],
    typer.Option("--gate", help="MODEL_OR_TASK=OTHER:LABEL (run a model only while OTHER detects LABEL)."),
]


def _post_overrides(mode, smoothing, threshold, refractory, gate_db) -> dict[str, Any]:
    return {
        "mode": mode,
        "smoothing": smoothing,
        "threshold": threshold,
        "refractory": refractory,
        "gate_db": _gate_db(gate_db),
    }


@app.command()
def serve(
    model: ModelsOpt = None,
    source: Annotated[Optional[str], typer.Option(help="mic | mic:NAME-OR-INDEX | FILE | - (raw S16_LE stdin).")] = None,
    rate: Annotated[Optional[int], typer.Option(help="Capture rate in Hz (mic, stdin).")] = None,
    channels: Annotated[Optional[int], typer.Option(help="Capture channels (mixed down to mono).")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace a file like a live stream.")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Repeat a file source.")] = False,
    broker: Annotated[Optional[str], typer.Option(help="mqtt://HOST[:PORT], mqtts://..., or 'embedded'.")] = None,
    qos: Annotated[Optional[int], typer.Option(help="QoS of results (0, 1, 2).")] = None,
    prefix: Annotated[Optional[str], typer.Option(help="Topic prefix.")] = None,
    device_id: Annotated[Optional[str], typer.Option("--device-id", help="Device id (default: hostname).")] = None,
    hop: HopOpt = None,
    gate_db: GateDbOpt = None,
    gate: GateOpt = None,
    mode: ModeOpt = None,
    smoothing: SmoothOpt = None,
    threshold: ThresholdOpt = None,
    refractory: RefractoryOpt = None,
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime threads per model.")] = None,
    provider: Annotated[
        Optional[str], typer.Option("--provider", help="onnxruntime provider: cpu, cuda or tensorrt (falls back to cpu).")
    ] = None,
    stats_interval: Annotated[Optional[float], typer.Option("--stats-interval", help="Seconds between stats.")] = None,
    stop_timeout: Annotated[
        Optional[float],
        typer.Option("--stop-timeout", help="Seconds from SIGTERM/SIGINT/SIGHUP to exit (default 5); the rest is dropped."),
    ] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="Print results as JSON lines instead of MQTT.")] = False,
    protocol: Annotated[Optional[str], typer.Option("--protocol", help="MQTT version: auto, 5 or 3.1.1.")] = None,
    ha_discovery: Annotated[
        Optional[bool], typer.Option("--ha-discovery/--no-ha-discovery", help="Announce sensors to Home Assistant.")
    ] = None,
    ha_discovery_prefix: Annotated[
        Optional[str], typer.Option("--ha-discovery-prefix", help="Home Assistant's discovery prefix.")
    ] = None,
    metrics_port: Annotated[
        Optional[int], typer.Option("--metrics-port", help="Serve Prometheus metrics on this port (metrics extra).")
    ] = None,
    metrics_host: Annotated[
        Optional[str], typer.Option("--metrics-host", help="Address for --metrics-port (default 127.0.0.1).")
    ] = None,
    config: ConfigOpt = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level", help="debug, info, warning, error.")] = None,
) -> None:
    """Classify live audio and publish the results over MQTT."""
    hops, bare_hop = _hops(hop)
    settings = _settings(
        config,
        {
            "models": model,
            "device_id": device_id,
            "log_level": log_level,
            "threads": threads,
            "provider": provider,
            "stats_interval": stats_interval,
            "stop_timeout": stop_timeout,
            "audio": {"source": source, "rate": rate, "channels": channels, "realtime": realtime or None, "loop": loop or None},
            "defaults": _post_overrides(mode, smoothing, threshold, refractory, gate_db),
            "hops": hops,
            "gates": _gates(gate),
            "mqtt": {"url": broker, "qos": qos, "prefix": prefix, "protocol": protocol},
            "ha_discovery": ha_discovery,
            "ha_discovery_prefix": ha_discovery_prefix,
            "metrics_port": metrics_port,
            "metrics_host": metrics_host,
        },
        bare_hop,
    )
    setup_logging(settings.log_level)
    from edgekd.serve import serve as run_serve

    code = run_serve(settings, use_stdout=stdout)
    if code:
        raise typer.Exit(code)


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="ONNX model file, or a model's name.", readable=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model's contract metadata."""
    from edgekd.catalog import locate
    from edgekd.model import Model
    from edgekd.printable import printable, terminal_json

    model = locate(model)
    m = Model(model)
    d = {"path": str(model), "sha256": m.sha256, **m.meta.to_dict()}
    if as_json:
        print(terminal_json(d, indent=2))
        return
    meta = m.meta
    print(printable(f"{meta.name} {meta.version}  ({model})"))
    print(f"  task          {meta.task}{' (multi-label)' if meta.multi_label else ''}")
    print(f"  labels        {', '.join(printable(label) for label in meta.labels)}")
    print(f"  sample rate   {meta.sample_rate} Hz")
    print(f"  window        {meta.window_samples} samples ({meta.window_seconds:g} s)")
    print(f"  sha256        {m.sha256}")
    print(f"  contract      version {meta.contract_version}")
    background = ", ".join(printable(label) for label in meta.background) or "none"
    print(f"  background    {background}{'' if meta.background_labels is not None else ' (assumed from the label names)'}")
    op = meta.operating_point
    if op is None:
        print("  operating pt  none in the file (serve uses the config or edgekd's defaults)")
    else:
        per_label = ", ".join(f"{printable(k)} {v:g}" for k, v in op.thresholds.items())
        print(
            f"  operating pt  hop {op.hop_s:g} s, smoothing {op.smoothing}, threshold {op.threshold:g}"
            f"{' (' + per_label + ')' if per_label else ''}, refractory {op.refractory_s:g} s, mode {op.mode}"
        )
        if op.aim:
            print(f"                aim: {printable(op.aim)}")
        if op.chosen_on:
            print(f"                chosen on: {printable(op.chosen_on)}")
        if op.validation:
            print("                validation: " + terminal_json(op.validation, sort_keys=True))
    if meta.training:
        print("  training      " + terminal_json(meta.training, sort_keys=True))


@app.command()
def classify(
    files: Annotated[list[Path], typer.Argument(help="Audio files (wav, flac, mp3, ogg).", readable=False)],
    model: ModelsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per file and model.")] = False,
    hop: HopOpt = None,
    gate_db: GateDbOpt = None,
    smoothing: SmoothOpt = None,
    threshold: ThresholdOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Classify files with the same windows and post-processing as serve."""
    from edgekd.classify import classify_files
    from edgekd.printable import printable
    from edgekd.serve import load_models

    hops, bare_hop = _hops(hop)
    settings = _settings(
        config,
        {
            "models": model,
            "defaults": _post_overrides(None, smoothing, threshold, None, gate_db),
            "hops": hops,
        },
        bare_hop,
    )
    setup_logging("warning")
    models = load_models(settings)
    failed = 0
    for res in classify_files(files, settings, models):
        if res.error:
            failed += 1
            print(printable(res.error), file=sys.stderr)
            if as_json:
                print(json.dumps({"file": res.file, "error": res.error}), flush=True)
            continue
        if res.failed:
            failed += 1
            print(res.failure_message(), file=sys.stderr)
        if as_json:
            print(json.dumps(res.to_dict()), flush=True)
        else:
            if res.label is not None:
                label = res.label
            elif res.failed:
                label = "(all windows failed)"
            elif res.nonfinite:
                label = f"(no valid window: {res.nonfinite} gave NaN or infinite scores)"
            else:
                label = "(all windows gated)"
            print(f"{printable(res.file)}\t{res.task}\t{printable(label)}\t{res.score:.3f}", flush=True)
    if failed:
        raise typer.Exit(1)


@app.command("models")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the models that --model NAME finds: task, labels, size, figures on streams and clips."""
    from edgekd.catalog import (
        MODELS_ENV, clip_figures, describe_places, format_clips, format_size, format_streams, known_models,
        stream_figures,
    )
    from edgekd.model import Model
    from edgekd.printable import printable, terminal_json

    rows, failed = [], 0
    for known in known_models().values():
        try:
            meta = Model(known.path).meta
        except _user_error_types() as exc:
            failed += 1
            print(f"edgekd models: {printable(exc)}", file=sys.stderr)
            continue
        rows.append({
            "name": known.name, "path": str(known.path), "from": known.origin, "task": meta.task,
            "labels": list(meta.labels), "bytes": known.path.stat().st_size,
            "streams": stream_figures(meta), "clips": clip_figures(meta),
        })
    if as_json:
        print(terminal_json(rows, indent=2))
    else:
        print(printable(f"models by name, from {describe_places()}:"))
        table = [("NAME", "TASK", "SIZE", "ON STREAMS (validation)", "ON CLIPS (test)", "LABELS")]
        table += [
            (r["name"], r["task"], format_size(r["bytes"]), format_streams(r["streams"]), format_clips(r["clips"]),
             ", ".join(r["labels"]))
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
        for row in table:
            print(printable("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]))
        if not rows:
            print(f"(none: put NAME.onnx files in a directory named by ${MODELS_ENV})")
    if failed:
        raise typer.Exit(1)


@app.command()
def devices(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List audio input devices (for --source mic:NAME-OR-INDEX)."""
    from edgekd.audio.sources import NO_INPUT_DEVICES, list_devices
    from edgekd.printable import printable

    devs = list_devices()
    if as_json:
        print(json.dumps(devs, indent=2))
        return
    if not devs:
        print(f"no input devices found: {NO_INPUT_DEVICES}")
    for d in devs:
        mark = "*" if d["default"] else " "
        print(f"{mark}{d['index']:3d}  {printable(d['name'])}  ({d['channels']} ch, {d['default_rate']} Hz)")


@app.command()
def listen(
    broker: Annotated[Optional[str], typer.Option(help="mqtt://HOST[:PORT] or mqtts://...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    count: Annotated[Optional[int], typer.Option(help="Exit after this many results.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Exit after this many seconds.")] = None,
    prefix: Annotated[Optional[str], typer.Option(help="Topic prefix.")] = None,
    wait_online: Annotated[
        Optional[float],
        typer.Option("--wait-online", help="Only wait up to SECONDS for this device's status to be online (exit 0, else 1)."),
    ] = None,
    device_id: Annotated[Optional[str], typer.Option("--device-id", help="Device for --wait-online.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Subscribe and show results as they arrive."""
    from edgekd.config import mqtt_settings

    if count is not None and count < 1:
        raise UserError(f"--count {count}: must be at least 1 (exit after this many results), e.g. --count 10")
    _check_seconds(timeout, "--timeout", "exit after this many seconds")
    _check_seconds(wait_online, "--wait-online", "wait up to this many seconds", allow_zero=True)

    settings = _settings(config, {"device_id": device_id, "mqtt": {"url": broker, "prefix": prefix}})
    setup_logging("warning")
    mqtt = mqtt_settings(settings)
    if wait_online is not None:
        raise typer.Exit(0 if _wait_online(mqtt, wait_online) else 1)
    from edgekd.mqtt.listen import listen as run_listen

    code = run_listen(mqtt, json_lines=as_json, count=count, timeout=timeout)
    raise typer.Exit(code or 0)


MAX_WAIT_S = 7 * 24 * 3600.0


def _check_seconds(value: float | None, flag: str, meaning: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= MAX_WAIT_S):  # also refuses NaN
        bounds = f"from 0 to {MAX_WAIT_S:g}" if allow_zero else f"more than 0 and at most {MAX_WAIT_S:g}"
        raise UserError(f"{flag} {value:g}: must be {bounds} seconds ({meaning}), e.g. {flag} 30")


def _wait_online(mqtt, seconds: float) -> bool:
    """True once <prefix>/<device>/status says online (retained or live) within `seconds`."""
    import threading
    import time

    from edgekd.mqtt.listen import Listener

    online = threading.Event()

    def on_status(received) -> None:
        if received.device == mqtt.device_id and received.status == "online":
            online.set()

    start = time.monotonic()
    with Listener(mqtt, on_status=on_status) as listener:
        listener.wait_subscribed(max(0.1, min(seconds, 10.0)))
        ok = online.wait(max(0.0, seconds - (time.monotonic() - start)))
    print(f"{mqtt.device_id}: {'online' if ok else f'not online within {seconds:g} s'}")
    return ok


@app.command()
def schema(
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Write DIR/v<N>/<name>.schema.json (one file per payload) instead of printing."),
    ] = None,
) -> None:
    """Print the JSON Schemas of every payload edgekd publishes."""
    from edgekd.mqtt.schema import all_schemas, write_schemas

    if out is not None:
        fix = "give a directory this user may write (it is created if missing)"
        if out.exists() and not out.is_dir():
            raise UserError(f"schema --out {out}: is a file, not a directory; {fix}")
        try:
            written = write_schemas(out)
        except OSError as exc:
            where = exc.filename or out
            raise UserError(
                f"schema --out {out}: cannot write {where} ({exc.strerror or exc}); {fix}"
            ) from None
        for path in written:
            print(path)
        return
    print(json.dumps(all_schemas(), indent=2))


@app.command()
def demo(
    model: ModelsOpt = None,
    clip: Annotated[Optional[Path], typer.Option(help="Audio file to serve (default: the bundled clip).", readable=False)] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Do not pace the clip in real time.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Show results as JSON lines.")] = False,
) -> None:
    """Serve the bundled speech clip into an embedded broker and show the results arriving."""
    from edgekd.demo import run_demo

    setup_logging("warning")
    run_demo(models=model, clip=clip, realtime=not fast, json_lines=as_json)


def _version(value: bool) -> None:
    if value:
        print(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    pass


def _train_unavailable(reason: str):
    def train(ctx: typer.Context) -> None:
        """Train and export models (needs the train extra)."""
        print(reason, file=sys.stderr)
        raise typer.Exit(USER_ERROR)

    return train


_optional_registered = False


def _register_optional() -> None:
    """`bench` and `train` come from other parts of this project; the CLI works without them.

    edgekd_train.cli must not import torch at import time; if it cannot be imported because the train
    extra is missing, `edgekd train` says how to install it and exits 2.
    """
    global _optional_registered
    if _optional_registered:
        return
    _optional_registered = True
    try:
        from edgekd.bench.command import bench
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("edgekd.bench"):
            raise
    else:
        app.command("bench")(bench)
    try:
        from edgekd_train.cli import app as train_app
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        reason = TRAIN_MISSING if missing in _TRAIN_MODULES or missing == "edgekd_train" else f"edgekd train is unavailable: {exc}"
        app.command(
            "train",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
        )(_train_unavailable(reason))
    else:
        app.add_typer(train_app, name="train", help="Train, distil and export models (needs the train extra).")


_BUILTIN = {"serve", "info", "classify", "devices", "listen", "schema", "demo", "models"}


def _wants_optional(args: list[str]) -> bool:
    """False when a built-in command runs: `serve` then never imports bench or train (memory)."""
    command = next((a for a in args if not a.startswith("-")), None)
    return command not in _BUILTIN


def main() -> None:
    if _wants_optional(sys.argv[1:]):
        _register_optional()
    user_errors = _user_error_types()
    try:
        app()
    except user_errors as exc:
        from edgekd.printable import printable

        print(f"edgekd: {printable(exc)}", file=sys.stderr)
        sys.exit(USER_ERROR)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _TRAIN_MODULES:
            print(TRAIN_MISSING, file=sys.stderr)
            sys.exit(USER_ERROR)
        raise
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
