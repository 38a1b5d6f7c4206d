"""Windows depend only on the samples, never on how audio arrived (cf. openWakeWord's test)."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

import edgekd
from edgekd.audio.decode import decode_file
from edgekd.audio.windowing import Resampler, Windower, default_hop
from edgekd.model import Model
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
from edgekd.postprocess import PostConfig
from edgekd.sink import MemorySink

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 16 kHz
CHUNKS = (1024, 1280, 2048, 2560, 4000)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def windows(x, window, hop, chunk):
    w = Windower(window, hop)
    out = []
    for i in range(0, len(x), chunk):
        out += [(s, v.copy()) for s, v in w.push(x[i : i + chunk])]
    return out


def test_window_n_covers_samples_n_hop_to_n_hop_plus_window():
    x = decode_file(CLIP).samples
    got = windows(x, 4000, 1000, 777)
    assert [s for s, _ in got] == list(range(0, len(x) - 4000 + 1, 1000))
    for s, v in got:
        assert np.array_equal(v, x[s : s + 4000])


@pytest.mark.parametrize("chunk", [1, 333, *CHUNKS, 100_000])
def test_same_windows_for_every_chunk_size(chunk):
    x = decode_file(CLIP).samples[:9000]
    ref = windows(x, 2000, 500, 1024)
    got = windows(x, 2000, 500, chunk)
    assert len(got) == len(ref) > 0
    assert all(a == c and np.array_equal(b, d) for (a, b), (c, d) in zip(ref, got))


def test_default_hop_is_a_quarter_window():
    assert default_hop(16000) == 4000


def test_short_stream_gets_one_padded_window_at_the_end():
    w = Windower(100, 25)
    assert list(w.push(np.ones(40, dtype=np.float32))) == []
    (start, v), = list(w.flush_short())
    assert start == 0 and np.array_equal(v[:40], np.ones(40)) and not v[40:].any()


def test_streaming_resampler_output_does_not_depend_on_chunking():
    x = decode_file(CLIP).samples

    def run(chunk):
        r = Resampler(16000, 8000)
        parts = [r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return np.concatenate(parts + [r.process(np.zeros(0, np.float32), last=True)])

    ref = run(1024)
    assert abs(len(ref) - len(x) / 2) <= 1
    for chunk in CHUNKS:
        assert np.array_equal(run(chunk), ref)


def _results(models, chunk):
    audio = decode_file(CLIP)
    runners = [ModelRunner(m, RunnerSpec(default_hop(m.meta.window_samples), PostConfig(smoothing=2), gate_db=-60)) for m in models]
    sink = MemorySink()
    p = Pipeline(runners, audio.rate, sink, "dev", t0=T0, run_id="r")
    for i in range(0, len(audio.samples), chunk):
        p.feed(audio.samples[i : i + chunk])
    p.finish()
    # across models the interleaving follows the chunks; per model the sequence must not change
    # (ids differ: each run draws a random instance per model)
    return sorted((r.model_dump(exclude={"latency_ms", "id"}) for r in sink.results), key=lambda r: (r["model"], r["seq"]))


def test_pipeline_results_identical_for_every_chunk_size(tmp_path):
    """A real clip through two models at two rates (one resampled), fed in several chunk sizes."""
    from onnx_models import energy_model

    m16 = Model(energy_model(tmp_path / "a.onnx", window_samples=8000, name="a16"))
    m8 = Model(energy_model(tmp_path / "b.onnx", sample_rate=8000, window_samples=4000, name="b8"))
    ref = _results([m16, m8], 1024)
    assert {r["model"] for r in ref} == {"a16", "b8"}
    assert [r["seq"] for r in ref if r["model"] == "a16"] == list(range(sum(r["model"] == "a16" for r in ref)))
    for chunk in CHUNKS[1:]:
        assert _results([m16, m8], chunk) == ref


def test_models_with_one_window_and_hop_share_a_windower_and_each_gets_every_window(tmp_path):
    """Three models, two with the same window and hop: those two read one Windower, and every model's
    results are what it gives alone, on a long clip and on one shorter than a window (its padded window)."""
    from onnx_models import energy_model

    a = Model(energy_model(tmp_path / "a.onnx", window_samples=8000, name="a"))
    b = Model(energy_model(tmp_path / "b.onnx", window_samples=8000, name="b"))
    c = Model(energy_model(tmp_path / "c.onnx", window_samples=4000, name="c"))
    runners = [ModelRunner(m, RunnerSpec(default_hop(m.meta.window_samples), PostConfig(), gate_db=None)) for m in (a, b, c)]
    pipe = Pipeline(runners, 16000, MemorySink(), "dev", t0=T0, run_id="r")
    assert runners[0].windower is runners[1].windower is not runners[2].windower
    for chunk in (1024, 333):
        together = _results([a, b, c], chunk)
        for m in (a, b, c):
            assert [r for r in together if r["model"] == m.meta.name] == _results([m], chunk)
    short = decode_file(CLIP).samples[:3000]  # shorter than every window: one padded window each at finish

    def finish_short(models):
        sink = MemorySink()
        p = Pipeline([ModelRunner(m, RunnerSpec(2000, PostConfig(), gate_db=None)) for m in models], 16000, sink,
                     "dev", t0=T0, run_id="r")  # fmt: skip
        p.feed(short)
        p.finish()
        return sorted((r.model, r.label, r.score) for r in sink.results)

    assert finish_short([a, b, c]) == sorted(finish_short([a]) + finish_short([b]) + finish_short([c]))
    assert len(finish_short([a, b])) == 2


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=30),
    window=st.integers(min_value=1, max_value=2000),
    hop=st.integers(min_value=1, max_value=2500),
)
def test_any_chunking_gives_the_windows_of_the_whole_signal(cuts, window, hop):
    x = np.arange(sum(cuts), dtype=np.float32)
    w = Windower(window, hop)
    got, i = [], 0
    for n in cuts:
        got += [(s, v.copy()) for s, v in w.push(x[i : i + n])]
        i += n
    starts = list(range(0, len(x) - window + 1, hop))
    assert [s for s, _ in got] == starts
    assert all(np.array_equal(v, x[s : s + window]) for s, v in got)


def test_samples_until_window_is_what_the_next_window_still_needs(tmp_path):
    """What serve's consumer sleeps for: the least any model still needs before its next window ends;
    1 when a model's audio is resampled (its delay makes a count inexact)."""
    from onnx_models import energy_model

    a = Model(energy_model(tmp_path / "a.onnx", window_samples=8000, name="a"))
    c = Model(energy_model(tmp_path / "c.onnx", window_samples=4000, name="c"))
    runners = [ModelRunner(m, RunnerSpec(hop, PostConfig(), gate_db=None)) for m, hop in ((a, 2000), (c, 3000))]
    pipe = Pipeline(runners, 16000, MemorySink(), "dev", t0=T0, run_id="r")
    assert pipe.samples_until_window() == 4000  # c's first window ends at 4,000
    x = np.zeros(16000, np.float32)
    pipe.feed(x[:3900])
    assert pipe.samples_until_window() == 100
    pipe.feed(x[3900:4000])  # c's window [0, 4000) ends; next: c at 7,000, a at 8,000
    assert pipe.samples_until_window() == 3000
    pipe.feed(x[4000:9000])  # a's first window ended at 8,000, c's at 7,000; next: a 10,000, c 10,000
    assert pipe.samples_until_window() == 1000
    b8 = Model(energy_model(tmp_path / "b.onnx", sample_rate=8000, window_samples=4000, name="b8"))
    resampled = Pipeline([ModelRunner(b8, RunnerSpec(1000, PostConfig(), gate_db=None))], 16000, MemorySink(),
                         "dev", t0=T0, run_id="r")  # fmt: skip
    assert resampled.samples_until_window() == 1
