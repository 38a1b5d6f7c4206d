"""logits_to_scores gives, bit for bit, the masked float64 softmax/sigmoid it is defined as."""

from __future__ import annotations

import numpy as np

from edgekd.model import logits_to_scores


def reference(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    broken = ~np.isfinite(z).all(axis=-1, keepdims=True)
    z = np.where(broken, 0.0, z)
    if multi_label:
        out = 1.0 / (1.0 + np.exp(-z))
    else:
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        out = e / e.sum(axis=-1, keepdims=True)
    return np.where(broken, np.nan, out).astype(np.float32)


def test_equals_the_reference_bit_for_bit_and_leaves_its_input_alone() -> None:
    rng = np.random.default_rng(0)
    with np.errstate(over="ignore"):
        for trial in range(2000):
            shape = (int(rng.integers(1, 4)), int(rng.integers(1, 40)))
            z = (rng.standard_normal(shape) * rng.choice([0.1, 3.0, 30.0, 300.0])).astype(rng.choice([np.float32, np.float64]))
            if trial % 4 == 0:
                z.flat[rng.integers(0, z.size)] = rng.choice([np.nan, np.inf, -np.inf])
            before = z.copy()
            for multi_label in (False, True):
                got = logits_to_scores(z, multi_label)
                assert got.dtype == np.float32
                assert np.array_equal(got, reference(z, multi_label), equal_nan=True)
                assert np.array_equal(z, before, equal_nan=True)


def test_a_broken_row_is_nan_and_the_others_are_scored() -> None:
    z = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0]], dtype=np.float32)
    got = logits_to_scores(z, multi_label=False)
    assert np.isnan(got[1]).all() and abs(float(got[0].sum()) - 1.0) < 1e-6
