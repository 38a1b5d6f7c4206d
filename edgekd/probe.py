"""The load probe: run a model on a few kinds of window before serving it.

onnxruntime loads graphs that cannot run (a Reshape valid only for some lengths, a Gather whose
index depends on the audio) and graphs whose output size follows the input. Such a model must be
refused at load, with the input that broke it named, rather than crash in the middle of a stream.
The windows cover the range a microphone delivers: silence, faint and loud noise, a tone, a
full-scale square wave (clipping) and a DC offset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from edgekd.contract import ModelContractError, ModelMetadata
from edgekd.model import ModelRunError

PROBE_SEED = "edgekd load probe"
PROBE_FIX = (
    "the model must run on any window of its window_samples; fix or re-export the graph (`edgekd train export`), "
    "and check it with `edgekd info`"
)


def seeded_normal(seed: str, n: int) -> np.ndarray:
    """`n` standard-normal draws that depend only on `seed`: Box-Muller over SHAKE-128's bytes.

    Not numpy.random, which a serving process would import for its load check alone (about 1.8
    MiB of private memory); the same numbers on every platform and numpy version."""
    raw = np.frombuffer(hashlib.shake_128(seed.encode()).digest(8 * n), dtype="<u4").reshape(2, n)
    u1 = (raw[0] + 0.5) / 2**32  # in (0, 1): log(u1) is finite
    u2 = raw[1] / 2**32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * u2)


def _noise(amplitude: float) -> Callable[[int], np.ndarray]:
    def make(n: int) -> np.ndarray:
        return amplitude * seeded_normal(PROBE_SEED, n)

    return make


def _tone(n: int) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n) / 16000.0)


def _square(n: int) -> np.ndarray:
    return np.where((np.arange(n) // 18) % 2 == 0, 1.0, -1.0)


# (what the window is, how to make one of n samples); the order is the order they are tried in
PROBE_WINDOWS: tuple[tuple[str, Callable[[int], np.ndarray]], ...] = (
    ("silence", np.zeros),
    ("faint noise (-60 dBFS)", _noise(0.001)),
    ("noise (-20 dBFS)", _noise(0.1)),
    ("loud noise (-6 dBFS)", _noise(0.5)),
    ("a 440 Hz tone at half scale", _tone),
    ("a full-scale square wave", _square),
    ("a DC offset of +0.5", lambda n: np.full(n, 0.5)),
)


class Probed(Protocol):
    path: object
    meta: ModelMetadata

    def logits(self, windows: np.ndarray) -> np.ndarray: ...


def probe_model(model: Probed) -> None:
    """Run every probe window; raise ModelContractError naming the first window that fails."""
    n = model.meta.window_samples
    for what, make in PROBE_WINDOWS:
        window = np.clip(make(n), -1.0, 1.0).astype(np.float32)[None, :]
        try:
            model.logits(window)
        except ModelRunError as exc:
            raise ModelContractError(model.path, f"fails on a test window of {what}: {exc.problem}", PROBE_FIX) from None
