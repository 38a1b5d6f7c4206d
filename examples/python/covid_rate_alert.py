#!/usr/bin/env python3
"""Alert when the share of COVID-positive results over the last hour passes a threshold.

Subscribes to every edgekd device's `covid` results (`edgekd/+/covid`), keeps each device's
results of the last `--window` seconds (by the result's own `window_end`, so results that waited
in the device's queue during an outage land in the right hour), and prints one JSON line when a
device's positive rate crosses `--threshold` upwards (again only after it fell below). Needs only
paho-mqtt (`pip install paho-mqtt`); the payload is edgekd's result schema v1
(docs/schemas/v1/result.schema.json).

    python covid_rate_alert.py --broker mqtt://broker.lan:1883 --threshold 0.3

With a fleet behind a shared subscription, run several copies with
`--topic '$share/covid-alerts/edgekd/+/covid'`: the broker gives each result to one of them.
(Each copy then sees only part of a device's results; the rate is still an estimate of the same
share, from fewer results.)
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from datetime import datetime, timedelta
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SCHEMA_VERSION = 1


class RateWindow:
    """One device's results over the last `window` (by result time, kept sorted: results that
    waited in a device's queue arrive late), and how many were positive."""

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self.results: list[tuple[datetime, bool]] = []
        self.positives = 0
        self.alerting = False

    def add(self, when: datetime, positive: bool) -> None:
        bisect.insort(self.results, (when, positive))
        self.positives += positive
        cut = bisect.bisect_left(self.results, (self.results[-1][0] - self.window, False))
        self.positives -= sum(p for _, p in self.results[:cut])
        del self.results[:cut]

    @property
    def rate(self) -> float:
        return self.positives / len(self.results) if self.results else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", default="mqtt://localhost:1883", help="mqtt://HOST[:PORT]")
    ap.add_argument("--topic", default="edgekd/+/covid", help="results to read (a shared subscription works too)")
    ap.add_argument("--label", default="positive", help="the label that counts as positive")
    ap.add_argument("--threshold", type=float, default=0.3, help="alert above this share of positive results")
    ap.add_argument("--window", type=float, default=3600, help="seconds of results the rate is taken over")
    ap.add_argument("--min-results", type=int, default=20, help="no alert from fewer results than this")
    ap.add_argument("--exit-after", type=int, default=0, help="exit after this many alerts (0: run forever)")
    args = ap.parse_args(argv)

    url = urlparse(args.broker if "://" in args.broker else f"mqtt://{args.broker}")
    windows: dict[str, RateWindow] = {}
    alerts = 0

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"covid_rate_alert: broker refused the connection: {reason_code}", file=sys.stderr)
            return
        client.subscribe(args.topic, qos=1)

    def on_message(client, userdata, msg):
        nonlocal alerts
        try:
            r = json.loads(msg.payload)
            if r.get("schema_version") != SCHEMA_VERSION:
                print(f"covid_rate_alert: skipping a result of schema {r.get('schema_version')} on {msg.topic}", file=sys.stderr)
                return
            device, label = r["device"], r["label"]
            when = datetime.fromisoformat(r["window_end"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError) as exc:
            print(f"covid_rate_alert: not an edgekd result on {msg.topic}: {exc}", file=sys.stderr)
            return
        w = windows.setdefault(device, RateWindow(timedelta(seconds=args.window)))
        w.add(when, label == args.label)
        over = len(w.results) >= args.min_results and w.rate > args.threshold
        if over and not w.alerting:
            alerts += 1
            print(json.dumps({
                "alert": "covid_positive_rate", "device": device, "rate": round(w.rate, 3),
                "positive": w.positives, "results": len(w.results), "window_s": args.window,
                "threshold": args.threshold, "at": when.isoformat(),
            }), flush=True)
            if args.exit_after and alerts >= args.exit_after:
                client.disconnect()
        w.alerting = over

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        print(f"covid_rate_alert: listening on {args.topic} ({url.hostname}:{url.port or 1883})", file=sys.stderr, flush=True)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.scheme == "mqtts":
        client.tls_set()
    client.connect(url.hostname or "localhost", url.port or (8883 if url.scheme == "mqtts" else 1883))
    try:
        client.loop_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
