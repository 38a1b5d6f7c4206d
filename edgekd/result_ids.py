"""Result ids: unique across models, daemons and restarts, so that subscribers can drop duplicates.

    <device>/<model-hash>/<instance>/<run>-<seq>

device      the daemon's device_id
model-hash  the first 12 hex digits of the model file's SHA-256
instance    8 random hex digits drawn for each model each time the daemon starts, distinct among
            the models of one daemon: the same file loaded twice, two copies of one file, and two
            daemons that share a device id get different ids
run         Unix seconds at start; with an outbox, larger than any run that outbox gave before, so
            `(run, seq)` orders results across restarts
seq         counts from 0 per model and run

QoS 1 may deliver a result twice (the same id); two different results never share an id.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

INSTANCE_HEX = 8


def new_instances(count: int, taken: Iterable[str] = ()) -> list[str]:
    """`count` random instance tokens, distinct from each other and from `taken`."""
    seen = set(taken)
    out: list[str] = []
    while len(out) < count:
        token = secrets.token_hex(INSTANCE_HEX // 2)
        if token not in seen:
            seen.add(token)
            out.append(token)
    return out


def result_id(device: str, model_hash: str, instance: str, run: str, seq: int) -> str:
    return f"{device}/{model_hash}/{instance}/{run}-{seq}"
