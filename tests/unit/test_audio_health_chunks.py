"""AudioHealth's counters depend on the samples only, never on how they were chunked."""

from __future__ import annotations

import numpy as np

from edgekd.audio.health import CLIP_LEVEL, AudioHealth

RATE = 1000  # blocks of 1000 samples


def noisy(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(5500) * 0.1).astype(np.float32)
    x[rng.integers(0, len(x), 7)] = np.nan
    x[rng.integers(0, len(x), 3)] = -np.inf
    x[1200:1230] = 1.0  # clipping within a block
    x[2990:3010] = -1.0  # clipping across a block boundary
    x[4000:5000] += 0.3  # DC offset in one block
    return x


def counters(x: np.ndarray, cuts: list[int], writable: bool = True) -> tuple:
    h = AudioHealth("test input", RATE)
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(x)]):
        chunk = x[a:b].copy()
        chunk.flags.writeable = writable
        out.append(h.check(chunk))
    clean = np.concatenate(out)
    return (h.samples, h.nonfinite, h.clipped, h.dc_blocks, h.last_dc), clean


def test_counters_and_samples_do_not_depend_on_the_chunking() -> None:
    for seed in range(5):
        x = noisy(seed)
        want, clean = counters(x, [])
        assert want[0] == len(x) and want[1] == 10
        assert want[2] == int(np.count_nonzero(np.abs(np.nan_to_num(x, posinf=0, neginf=0)) >= CLIP_LEVEL))
        assert want[3] == 1 and np.isfinite(clean).all()
        rng = np.random.default_rng(100 + seed)
        for writable in (True, False):
            cuts = sorted(set(rng.integers(1, len(x), rng.integers(1, 40)).tolist()))
            got, clean2 = counters(x, cuts, writable)
            assert got[:4] == want[:4]
            assert abs(got[4] - want[4]) < 1e-9  # the last block's mean: summed in other parts
            assert np.array_equal(clean2, clean)


def test_one_sample_chunks_and_whole_blocks() -> None:
    x = noisy(9)
    want, _ = counters(x, [])
    assert counters(x, list(range(1, len(x))))[0][:4] == want[:4]
    assert counters(x, list(range(RATE, len(x), RATE)))[0][:4] == want[:4]
