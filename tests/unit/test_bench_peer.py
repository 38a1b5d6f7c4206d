"""The peer benchmark's arithmetic and audio conversion (its timings are printed, never tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_openwakeword.py"
spec = importlib.util.spec_from_file_location("peer_openwakeword", PATH)
assert spec is not None and spec.loader is not None
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)


def test_marginal_cost_is_the_slope_between_one_and_five_models() -> None:
    assert peer.marginal(10.0, 18.0) == 2.0


def test_table_sets_each_side_against_openwakeword() -> None:
    ms = {("oww", 1): 40.0, ("oww", 5): 48.0, ("ek", 1): 4.0, ("ek", 5): 24.0}
    text = peer.table(ms, {"oww": "peer", "ek": "edgekd"})
    row = next(line for line in text.splitlines() if line.startswith("edgekd"))
    # 1 model 4.00, 5 models 24.00, per extra 5.00; ratios 0.10x, 0.50x, extra 5.00 / 2.00 = 2.50x
    assert row.split()[1:] == ["4.00", "24.00", "5.00", "0.10x", "0.50x", "2.50x"]


def test_pcm16_rounds_and_saturates() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5], dtype=np.float32)
    assert peer.to_pcm16(x).tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32768]
