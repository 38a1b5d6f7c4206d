"""The incremental log-mel front end: a stream's frames do not depend on how its audio arrives.

Whatever the chunking, `LogMelStream.push` yields exactly (bit for bit) the frames of one
computation over the whole signal, every window reads the frames its own samples would give, and a
reset starts the frames afresh at the new position.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.frontend import FrontEndError, LogMelFrames, LogMelSpec, LogMelStream, mel_filters

WAV2TINY = {"kind": "logmel", "sample_rate": 16000, "n_fft": 320, "hop": 240, "n_mels": 40, "f_min": 40.0,
            "f_max": 8000.0, "window": "hann_periodic", "dft_scale": "window_sum", "mel_scale": "htk",
            "mel_norm": "area", "power_floor": 1e-12, "log": "ln"}  # fmt: skip
SMALL = {**WAV2TINY, "sample_rate": 8000, "n_fft": 64, "hop": 24, "n_mels": 12, "f_max": 4000.0}


def signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000.0
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def pushed(stream: LogMelStream, x: np.ndarray, cuts: list[int]) -> np.ndarray:
    """Push `x` in pieces; read the frames each piece completed right after it, as windows do."""
    bounds = [0, *sorted(set(min(c, len(x)) for c in cuts)), len(x)]
    parts, seen = [], 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        stream.push(x[a:b])
        if stream.available > seen:
            parts.append(stream.frames(seen, stream.available - seen).copy())
            seen = stream.available
    return np.concatenate(parts) if parts else np.zeros((0, stream.spec.n_mels), dtype=np.float32)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 3000), cuts=st.lists(st.integers(0, 3000), max_size=25), seed=st.integers(0, 3))
def test_incremental_frames_equal_one_computation_over_the_whole_signal(n, cuts, seed):
    spec = LogMelSpec.from_dict(SMALL)
    x = signal(n, seed)
    stream = LogMelStream(spec, keep=8)
    got = pushed(stream, x, cuts)
    stream.frames(0, 0)  # nothing left to compute
    whole = LogMelFrames(spec).of_window(x)
    assert got.shape == (spec.n_frames(n), spec.n_mels) == whole.shape
    assert np.array_equal(got, whole)
    assert stream.total == len(whole)


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 4000), max_size=20), hop_frames=st.integers(1, 9), seed=st.integers(0, 3))
def test_every_window_reads_the_frames_of_its_own_samples(cuts, hop_frames, seed):
    """A model's window of 400 samples at a hop of whole frames, read back after each push."""
    spec = LogMelSpec.from_dict(SMALL)
    window, hop = 400, hop_frames * spec.hop
    nf = spec.n_frames(window)
    x = signal(4000, seed)
    stream = LogMelStream(spec, keep=nf)
    frames_of = LogMelFrames(spec)
    bounds = [0, *sorted(set(cuts)), len(x)]
    next_start = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        stream.push(x[a:b])
        while next_start + window <= b:  # every window this push completed, as the pipeline asks
            got = stream.frames(stream.frame_at(next_start), nf)
            assert got is not None
            assert np.array_equal(got, frames_of.of_window(x[next_start : next_start + window]))
            next_start += hop


def test_reset_starts_the_frames_afresh_at_the_new_position():
    spec = LogMelSpec.from_dict(SMALL)
    x = signal(2000, 0)
    stream = LogMelStream(spec, keep=10)
    stream.push(x[:700])
    stream.reset(1000)  # samples 700..999 were lost
    assert stream.total == 0 and stream.frames(0, 1) is None
    stream.push(x[1000:])
    assert stream.available == spec.n_frames(1000)
    assert np.array_equal(stream.frames(0, 10), LogMelFrames(spec).of_window(x[1000:])[:10])
    assert stream.frame_at(1000) == 0 and stream.frame_at(1000 + spec.hop) == 1
    assert stream.frame_at(1001) is None and stream.frame_at(700) is None


def test_frames_no_longer_kept_are_not_handed_out():
    spec = LogMelSpec.from_dict(SMALL)
    stream = LogMelStream(spec, keep=4)
    for _ in range(10):
        stream.push(signal(spec.hop * 5, 1))
        stream.frames(stream.available - 1, 1)
    assert stream.frames(stream.total - 4, 4) is not None
    assert stream.frames(0, 4) is None
    assert stream.frames(stream.total - 2, 4) is None  # not computed yet


def test_silence_gives_the_log_of_the_power_floor():
    spec = LogMelSpec.from_dict(WAV2TINY)
    out = LogMelFrames(spec).of_window(np.zeros(16000, dtype=np.float32))
    assert out.shape == (66, 40)
    assert np.allclose(out, np.log(1e-12))


def test_a_full_scale_sine_at_a_bin_centre_has_dft_magnitude_one_half():
    """The window-sum DFT scaling: the peak bin's power is 0.25 whatever n_fft is."""
    spec = LogMelSpec.from_dict(WAV2TINY)
    k = 20
    x = np.sin(2 * np.pi * k * np.arange(320) / 320)
    frames = LogMelFrames(spec)
    spectrum = np.fft.rfft(x * frames._scaled_window)
    assert abs(abs(spectrum[k]) - 0.5) < 1e-9


def test_mel_filters_have_equal_area_and_no_empty_band():
    spec = LogMelSpec.from_dict(WAV2TINY)
    fb = mel_filters(spec)
    assert fb.shape == (40, 161)
    assert (fb.sum(axis=1) > 0).all()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "wav2vec2"}, "kind"),
        ({"window": "hamming"}, "window"),
        ({"n_fft": 0}, "n_fft"),
        ({"hop": 2.5}, "hop"),
        ({"f_max": 9000.0}, "f_max"),
        ({"power_floor": 0.0}, "power_floor"),
        ({"extra": 1}, "unknown"),
    ],
)
def test_a_description_this_runtime_cannot_compute_is_named(change, field):
    with pytest.raises(FrontEndError, match=field):
        LogMelSpec.from_dict({**WAV2TINY, **change})


def test_equal_descriptions_have_equal_canonical_json_whatever_their_key_order():
    a = LogMelSpec.from_dict(WAV2TINY)
    b = LogMelSpec.from_dict(dict(reversed(list({**WAV2TINY, "f_min": 40}.items()))))
    assert a.canonical() == b.canonical()
    assert a.canonical() != LogMelSpec.from_dict({**WAV2TINY, "n_mels": 64}).canonical()
