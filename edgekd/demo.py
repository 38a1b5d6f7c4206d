"""`edgekd demo`: the whole path on one machine, with no microphone and no broker.

It starts the embedded broker on loopback, subscribes to it (the same Listener as `edgekd
listen`), serves the bundled speech clips in real time through the bundled model(s) into the
broker, prints each classification as it arrives, and exits 0 when the clips are done.

The bundled clips are five TESS recordings of one word that the shipped emotion models never saw
in training ("search", in the test split), said angry, happy, sad, neutral and surprised. They
play one after another, each in a slot of one model window, so each window holds one clip.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekd.catalog import MODELS_ENV, describe_places, locate, places
from edgekd.config import ConfigError, load_settings, mqtt_settings
from edgekd.daemon import Daemon, build_runners
from edgekd.audio.sources import PlaylistSource
from edgekd.serve import load_models, make_source
from edgekd.printable import printable

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_CLIP = ASSETS / "YAF_bar_angry.flac"  # TESS, CC BY-NC-ND 4.0: see assets/ATTRIBUTION.md
# The demo's playlist (TESS, CC BY-NC-ND 4.0, verbatim): a word from the models' test split.
DEMO_PLAYLIST = tuple(ASSETS / f"YAF_search_{e}.flac" for e in ("angry", "happy", "sad", "neutral", "ps"))
MODEL_PATTERNS = ("*-emotion.onnx", "*.onnx")  # the first pattern that matches wins
DEMO_DEVICE = "demo"
DELIVERY_WAIT_S = 5.0  # after the clip: how long to wait for the last results and the offline status


def find_demo_models(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The models of the first place (edgekd.catalog.places: $EDGEKD_MODELS, then the shipped
    models) that holds any: its emotion models if it has some, else all of them."""
    for place in places(environ):
        files = place.files()
        for pattern in MODEL_PATTERNS:
            found = [f for f in files if f.match(pattern)]
            if found:
                return found
    raise ConfigError(
        f"demo: no model found in {describe_places(environ)}; pass --model NAME or FILE.onnx, or set {MODELS_ENV}"
    )


def run_demo(
    models: Sequence[Path] | None = None,
    clip: Path | None = None,
    realtime: bool = True,
    json_lines: bool = False,
    out=sys.stdout,
) -> int:
    """Returns the number of results that arrived at the subscriber."""
    from edgekd.mqtt.broker import EmbeddedBroker
    from edgekd.mqtt.listen import Listener, format_json, format_line, header
    from edgekd.mqtt.publisher import MqttPublisher

    paths = [locate(m) for m in models] if models else find_demo_models()
    lock = threading.Lock()
    arrived = 0
    offline = threading.Event()  # the daemon's retained `offline` came back: the last row to show

    def show(received) -> None:
        nonlocal arrived
        line = format_json(received) if json_lines else format_line(received)
        with lock:
            if received.kind == "result":
                arrived += 1
            if line is not None:
                out.write(line + "\n")
                out.flush()
            if received.kind == "status" and received.device == DEMO_DEVICE and received.status == "offline":
                offline.set()

    with EmbeddedBroker() as broker:
        settings = load_settings(
            overrides={
                "device_id": DEMO_DEVICE,
                "models": [{"path": str(p)} for p in paths],
                "audio": {"source": str(clip or DEMO_PLAYLIST[0]), "realtime": realtime, "loop": False},
                "defaults": {"mode": "all"},
                # the embedded broker ends with the demo: nothing to keep in a disk outbox
                "mqtt": {"url": broker.url, "protocol": broker.protocol, "outbox": "memory"},
            },
            environ={},  # the demo ignores EDGEKD_* settings: it must run the same everywhere
        )
        loaded = load_models(settings)
        if clip is None:
            # one window per clip: clips sit in slots of the longest window, which is the hop; a model
            # with a shorter window hops by its window, so that no audio goes unclassified
            slot_s = max(m.meta.window_seconds for m in loaded)
            settings.hops.update({m.meta.name: min(slot_s, m.meta.window_seconds) for m in loaded})
        runners = build_runners(settings, loaded)
        if clip is None:
            source = PlaylistSource(list(DEMO_PLAYLIST), slot_seconds=slot_s, realtime=realtime)
        else:
            source = make_source(settings, loaded, runners)
        mqtt = mqtt_settings(settings)
        if not json_lines:
            names = ", ".join(f"{m.meta.name} ({m.meta.task}: {', '.join(m.meta.labels)})" for m in loaded)
            played = clip.name if clip else "5 TESS clips of an unseen word: angry, happy, sad, neutral, surprise"
            shown = f"edgekd demo: {printable(played)}\n  -> {printable(names)}"
            out.write(f"{shown}\n  -> embedded broker {broker.url}\n{header()}\n")
            out.flush()
        with Listener(mqtt, on_message=show) as listener:
            listener.wait_subscribed()
            publisher = MqttPublisher(mqtt)
            publisher.start()
            publisher.wait_connected(5.0)
            daemon = Daemon(source, runners, publisher, device=settings.device_id, stats_interval=settings.stats_interval)
            daemon.run()  # returns when the clip ends; close() has flushed and published offline
            sent = sum(r.counters.published for r in runners)
            deadline = time.monotonic() + DELIVERY_WAIT_S
            while (arrived < sent or not offline.is_set()) and time.monotonic() < deadline:
                time.sleep(0.02)
        if not json_lines:
            status = "status offline" if offline.is_set() else f"status offline not seen within {DELIVERY_WAIT_S:g} s"
            with lock:
                out.write(f"{arrived} of {sent} results arrived; clip over, {status}.\n")
    return arrived
