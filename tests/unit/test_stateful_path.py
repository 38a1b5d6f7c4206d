"""The stateful path: a streaming student's step graph, fed a hop of shared log-mel frames at a time,
gives the whole graph's answers on real audio after any number of hops, however the audio arrives.

A gap in the source resets the state; two models sharing a front end give exactly what each gives
alone; a step graph that disagrees falls back (one line says so); a malformed one is refused.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from edgekd.audio.decode import decode_file
from edgekd.contract import KEY_STREAM, ModelContractError
from edgekd.model import Model
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
from edgekd.postprocess import PostConfig
from edgekd.sink import MemorySink
from edgekd.split import PROBE_ATOL, SplitScorer
from edgekd.stateful import StatefulScorer, load_stream
from tests.onnx_models import rewrite_props

ROOT = Path(__file__).resolve().parents[2]
ASSETS = sorted((ROOT / "edgekd" / "assets").glob("*.flac"))
RATE = 16000
FRAME = 240  # the streaming student's front-end hop (15 ms)


def streaming_model(path: Path, check: np.ndarray, seed: int = 0) -> Path:
    """A streamtcn keyword student with non-trivial weights and BatchNorm statistics, exported."""
    import torch

    from edgekd.contract import ModelMetadata
    from edgekd_train.export import export_onnx
    from edgekd_train.models.streaming import build_streaming

    torch.manual_seed(seed)
    model = build_streaming("streamtcn", 12)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        model.norm.running_mean.fill_(-12.0)  # log-mel of speech sits far below zero
        model.norm.running_var.fill_(16.0)
    labels = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_")
    meta = ModelMetadata(task="keyword", labels=labels, sample_rate=RATE, window_samples=RATE, multi_label=False,
                         name="streamtcn-keyword", version="0.0.1")  # fmt: skip
    export_onnx(model.eval(), meta, path, check)
    return path


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 13 s of real speech (the bundled clips, back to back)."""
    return np.concatenate([decode_file(p, RATE).samples for p in ASSETS]).astype(np.float32)


@pytest.fixture(scope="module")
def stream_onnx(tmp_path_factory, speech) -> Path:
    check = np.stack([speech[i : i + RATE] for i in range(0, 8 * RATE, RATE)])
    return streaming_model(tmp_path_factory.mktemp("stream") / "streamtcn-keyword.onnx", check)


@pytest.fixture(scope="module")
def model(stream_onnx) -> Model:
    return Model(stream_onnx)


def run(models: list[Model], x: np.ndarray, hops: list[int], *, split: bool = True, chunks: list[int] | None = None,
        gap_at: int | None = None) -> tuple[Pipeline, list[tuple]]:  # fmt: skip
    """Results of a serve pipeline (every window published) as (model, start, label, scores)."""
    runners = [ModelRunner(m, RunnerSpec(h, PostConfig(), gate_db=None)) for m, h in zip(models, hops)]
    sink = MemorySink()
    pipeline = Pipeline(runners, RATE, sink, "test", split=split)
    segments = [(0, len(x))] if gap_at is None else [(0, gap_at), (gap_at + 777, len(x))]
    sizes = iter(chunks or [1024] * (len(x) // 1024 + 2))
    for begin, end in segments:
        if begin > 0:
            pipeline.gap(begin)
        pos = begin
        while pos < end:
            n = next(sizes, 1024)
            pipeline.feed(x[pos : min(pos + n, end)])
            pos += n
    pipeline.finish()
    t0 = pipeline.t0
    out = [(p.model, round((p.window_start - t0).total_seconds() * RATE), p.label, tuple(p.scores.values()))
           for p in sink.results]  # fmt: skip
    return pipeline, out


def whole_logits(model: Model, x: np.ndarray, starts: list[int]) -> np.ndarray:
    return model.logits(np.stack([x[s : s + RATE] for s in starts]))


def test_the_export_writes_a_step_graph_that_says_what_it_equals(model):
    stream = model.meta.stream
    assert stream is not None and stream["equals"] == "whole_graph" and stream["normalization"] == "fixed"
    assert stream["receptive_field_frames"] == 66  # the window's frames: 1 s at 15 ms
    assert [s["name"] for s in stream["state"]][0] == "stem" and stream["state"][-1]["name"] == "pool"
    assert load_stream(model) is not None


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hop_frames=st.integers(1, 66), chunks=st.lists(st.integers(1, 6000), min_size=1, max_size=40),
       offset=st.integers(0, 3 * RATE))  # fmt: skip
def test_the_stateful_path_equals_the_whole_graph_after_any_number_of_hops(model, speech, hop_frames, chunks, offset):
    x = speech[offset : offset + 4 * RATE]
    pipe, got = run([model], x, [hop_frames * FRAME], chunks=chunks)
    scorer = pipe.runners[0].split
    assert isinstance(scorer, StatefulScorer) and scorer.scored == len(got) >= 1
    assert scorer.restarts == 1  # zero state once, at the start; every later window only its new frames
    starts = [r[1] for r in got]
    whole = whole_logits(model, x, starts)
    assert [r[2] for r in got] == [model.meta.labels[i] for i in whole.argmax(-1)]
    scores = np.array([r[3] for r in got])
    assert np.abs(scores - model.scores(np.stack([x[s : s + RATE] for s in starts]))).max() <= PROBE_ATOL


def test_stateful_and_whole_windows_give_the_same_results_across_a_gap(model, speech):
    hop = 5 * FRAME  # 75 ms: an 80 ms hop on shared frames
    pipe, stateful = run([model], speech, [hop], gap_at=70_001)
    _, whole = run([model], speech, [hop], split=False, gap_at=70_001)
    assert [r[:3] for r in stateful] == [r[:3] for r in whole]
    assert np.abs(np.array([r[3] for r in stateful]) - np.array([r[3] for r in whole])).max() <= PROBE_ATOL
    scorer = pipe.runners[0].split
    assert isinstance(scorer, StatefulScorer) and scorer.restarts == 2  # the start, and after the gap
    assert 70_001 + 777 in [r[1] for r in stateful]


def test_a_gap_resets_the_state(model, speech):
    """After a gap the results are those of a fresh pipeline fed only what came after it, exactly."""
    hop = 5 * FRAME
    _, gapped = run([model], speech, [hop], gap_at=50_000)
    _, fresh = run([model], speech[50_777:], [hop])
    after = [r for r in gapped if r[1] >= 50_777]
    assert [(r[1] - 50_777, r[2], r[3]) for r in after] == [r[1:] for r in fresh]


def test_a_scorer_reset_by_hand_starts_from_zeros(model, speech):
    pipe, _ = run([model], speech[: 2 * RATE], [5 * FRAME])
    scorer = pipe.runners[0].split
    assert isinstance(scorer, StatefulScorer) and scorer.next_frame is not None
    pipe.gap(2 * RATE)
    assert scorer.next_frame is None and scorer.last is None
    restarts = scorer.restarts
    pipe.feed(speech[2 * RATE : 4 * RATE])  # the first window after the gap starts from zeros
    assert scorer.restarts == restarts + 1 and scorer.next_frame is not None


def test_two_models_sharing_a_front_end_give_exactly_what_each_gives_alone(model, speech):
    """The streaming student and Wav2Tiny (split path) read one log-mel computation."""
    wav2tiny = Model(_with_parts(ROOT / "models" / "wav2tiny-keyword.onnx"))
    pipe, both = run([model, wav2tiny], speech, [5 * FRAME, 17 * FRAME])
    assert len(pipe.front_ends[0].streams) == 1
    assert isinstance(pipe.runners[0].split, StatefulScorer) and isinstance(pipe.runners[1].split, SplitScorer)
    _, alone = run([model], speech, [5 * FRAME])
    _, tiny_alone = run([wav2tiny], speech, [17 * FRAME])
    assert [r for r in both if r[0] == model.meta.name] == alone
    assert [r for r in both if r[0] == wav2tiny.meta.name] == tiny_alone


def test_the_same_model_twice_keeps_two_states(model, speech):
    pipe, both = run([model, model], speech[: 4 * RATE], [5 * FRAME, 9 * FRAME])
    _, a = run([model], speech[: 4 * RATE], [5 * FRAME])
    _, b = run([model], speech[: 4 * RATE], [9 * FRAME])
    assert pipe.runners[0].split is not pipe.runners[1].split
    assert sorted(both) == sorted(a + b)


_parts_cache: dict[Path, Path] = {}


def _with_parts(src: Path) -> Path:
    from edgekd_train.stream_parts import add_stream_parts

    if src not in _parts_cache:
        import tempfile

        dst = Path(tempfile.mkdtemp()) / src.name
        add_stream_parts(src, dst)
        _parts_cache[src] = dst
    return _parts_cache[src]


def _change_stream(change):
    def apply(props):
        stream = json.loads(props[KEY_STREAM])
        change(stream)
        props[KEY_STREAM] = json.dumps(stream)

    return apply


def test_a_step_graph_that_disagrees_falls_back_and_says_so(stream_onnx, speech, tmp_path, caplog):
    def nudge_head(stream):
        graph = onnx.load_from_string(base64.b64decode(stream["graph"]))
        bias = next(i for i in graph.graph.initializer if list(i.dims) == [12])
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.01), bias.name))
        stream["graph"] = base64.b64encode(graph.SerializeToString()).decode()

    path = rewrite_props(stream_onnx, tmp_path / "nudged.onnx", _change_stream(nudge_head))
    nudged = Model(path)
    with caplog.at_level(logging.WARNING, logger="edgekd.stateful"):
        pipe, got = run([nudged], speech[: 3 * RATE], [5 * FRAME])
    lines = [r.getMessage() for r in caplog.records if r.name == "edgekd.stateful"]
    assert len(lines) == 1 and str(path) in lines[0] and "running whole windows" in lines[0] and "0.01" in lines[0]
    assert isinstance(pipe.runners[0].split, SplitScorer)  # the body still holds: the split path runs it
    _, whole = run([nudged], speech[: 3 * RATE], [5 * FRAME], split=False)
    assert [r[:3] for r in got] == [r[:3] for r in whole]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("receptive_field_frames"), "receptive_field_frames"),
        (lambda s: s.update(equals="nearly"), "equals"),
        (lambda s: s.update(graph="not base64!"), "base64"),
        (lambda s: s.update(graph=base64.b64encode(b"not onnx").decode()), "cannot load"),
        (lambda s: s["state"].pop(), "state says"),
        (lambda s: s.update(state="pool"), "state must be"),
    ],
)
def test_a_malformed_step_graph_is_refused_naming_the_key(stream_onnx, tmp_path, change, message):
    path = rewrite_props(stream_onnx, tmp_path / "bad.onnx", _change_stream(change))
    with pytest.raises(ModelContractError, match=message) as err:
        load_stream(Model(path))
    assert str(path) in str(err.value) and KEY_STREAM in str(err.value)


@pytest.mark.data
def test_the_stateful_path_gives_every_speech_commands_clip_its_label(model, data_dir):
    """Clips back to back, each starting a window, at an 80 ms hop: logits within 1e-4 of the whole graph."""
    clips = sorted((data_dir / "speech_commands").glob("*/*.ogg"))[::20]
    hop = 5 * FRAME
    slot = 16 * hop  # a clip (at most 1 s) and some silence
    x = np.zeros(slot * len(clips), dtype=np.float32)
    for k, c in enumerate(clips):
        audio = decode_file(c, RATE).samples[:RATE]
        x[k * slot : k * slot + len(audio)] = audio
    pipe, got = run([model], x, [hop], chunks=[1280] * (len(x) // 1280 + 1))
    starts = [r[1] for r in got]
    whole = whole_logits(model, x, starts)
    scores = np.array([r[3] for r in got])
    assert np.abs(scores - model.scores(np.stack([x[s : s + RATE] for s in starts]))).max() <= PROBE_ATOL
    per_clip = [i for i, s in enumerate(starts) if s % slot == 0]
    assert len(per_clip) == len(clips) >= 150
    assert [got[i][2] for i in per_clip] == [model.meta.labels[j] for j in whole[per_clip].argmax(-1)]
    assert pipe.runners[0].split.restarts == 1


def test_serve_keeps_the_step_and_body_sessions_and_lets_the_whole_graph_go(stream_onnx, model, speech):
    from edgekd.config import load_settings
    from edgekd.serve import load_models

    served = load_models(load_settings(None, {"models": [{"path": str(stream_onnx)}]}, environ={}))[0]
    assert served.session is None and load_stream(served) is not None
    hop = 5 * FRAME
    pipe, got = run([served], speech[: RATE + 3000], [hop], gap_at=RATE // 2)  # short pieces: padded windows too
    _, whole = run([model], speech[: RATE + 3000], [hop], split=False, gap_at=RATE // 2)
    assert isinstance(pipe.runners[0].split, StatefulScorer)
    assert [r[:3] for r in got] == [r[:3] for r in whole]
    assert np.abs(np.array([r[3] for r in got]) - np.array([r[3] for r in whole])).max() <= PROBE_ATOL
