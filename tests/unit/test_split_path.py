"""The split path: the shipped models, cut by `edgekd train stream-parts`'s code, run as a shared
numpy front end plus their body, give the whole graph's answers on real audio.

Same top label on every window and logits within 1e-4 after any number of hops, however the audio
is chunked; a gap restarts the frames; two models sharing a front end give exactly what each gives
alone; a file whose body disagrees runs whole windows, and says so in one line.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekd.audio.decode import decode_file
from edgekd.contract import KEY_BODY, KEY_FRONTEND, ModelContractError
from edgekd.frontend import LogMelStream
from edgekd.model import Model
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
from edgekd.postprocess import PostConfig
from edgekd.sink import MemorySink
from edgekd.split import PROBE_ATOL, load_split, shared_hop
from tests.onnx_models import rewrite_props, version1_copy
from edgekd_train.stream_parts import add_stream_parts

ROOT = Path(__file__).resolve().parents[2]
ASSETS = sorted((ROOT / "edgekd" / "assets").glob("*.flac"))
RATE = 16000
HOP = 17 * 240  # 255 ms: a whole number of Wav2Tiny's 15 ms frames


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> dict[str, Path]:
    """The shipped models with their stream parts, written to a temp dir (models/ stays as it is)."""
    out = tmp_path_factory.mktemp("cut")
    paths = {}
    for name in ("wav2tiny-keyword", "wav2tiny-cough", "wav2small-keyword"):
        paths[name] = out / f"{name}.onnx"
        add_stream_parts(ROOT / "models" / f"{name}.onnx", paths[name])
    return paths


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 13 s of real speech (the bundled clips, back to back)."""
    return np.concatenate([decode_file(p, RATE).samples for p in ASSETS]).astype(np.float32)


def windows_of(x: np.ndarray, window: int, hop: int) -> list[tuple[int, np.ndarray]]:
    return [(s, x[s : s + window]) for s in range(0, len(x) - window + 1, hop)]


def streamed_logits(model: Model, x: np.ndarray, hop: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole-graph logits of every window, and the split path's from frames pushed in random chunks."""
    split = load_split(model)
    assert split is not None
    w = model.meta.window_samples
    hop = shared_hop(hop, split.spec.hop, w)
    stream = LogMelStream(split.spec, keep=split.frames_per_window)
    rng = np.random.default_rng(seed)
    got, starts = [], [s for s, _ in windows_of(x, w, hop)]
    pos, i = 0, 0
    while pos < len(x):
        n = int(rng.integers(1, 5000))
        stream.push(x[pos : pos + n])
        pos += n
        while i < len(starts) and starts[i] + w <= pos:  # every window this chunk completed
            frames = stream.frames(stream.frame_at(starts[i]), split.frames_per_window)
            got.append(split.logits(frames[None])[0])
            i += 1
    whole = model.logits(np.stack([win for _, win in windows_of(x, w, hop)]))
    return whole, np.stack(got)


@pytest.mark.parametrize("name", ["wav2tiny-keyword", "wav2tiny-cough", "wav2small-keyword"])
def test_split_path_equals_the_whole_graph_on_real_speech_after_any_number_of_hops(cut, speech, name):
    whole, split = streamed_logits(Model(cut[name]), speech, HOP, seed=1)
    assert len(whole) >= 45
    assert np.abs(whole - split).max() <= PROBE_ATOL
    assert (whole.argmax(-1) == split.argmax(-1)).all()


@pytest.mark.data
def test_split_path_gives_every_speech_commands_test_clip_its_label(cut, data_dir):
    """Clips back to back, each starting a window: the same label for every clip, logits within 1e-4."""
    clips = sorted((data_dir / "speech_commands").glob("*/*.ogg"))[::20]
    hop = 4800  # 300 ms: whole frames of both students (15 ms and 10 ms)
    slot = 4 * hop  # a clip (at most 1 s) and some silence
    x = np.zeros(slot * len(clips), dtype=np.float32)
    for k, c in enumerate(clips):
        audio = decode_file(c, RATE).samples[:RATE]
        x[k * slot : k * slot + len(audio)] = audio
    for name in ("wav2tiny-keyword", "wav2small-keyword"):
        whole, split = streamed_logits(Model(cut[name]), x, hop, seed=2)
        assert np.abs(whole - split).max() <= PROBE_ATOL, name
        per_clip = slice(0, None, 4)  # window 4k starts at clip k
        assert len(whole[per_clip]) == len(clips) >= 150
        assert (whole[per_clip].argmax(-1) == split[per_clip].argmax(-1)).all(), name
        assert (whole.argmax(-1) == split.argmax(-1)).all(), name


def run(models: list[Model], x: np.ndarray, hops: list[int], *, split: bool = True, chunk: int = 1024,
        gap_at: int | None = None) -> tuple[Pipeline, list[tuple]]:  # fmt: skip
    """Results of a serve pipeline (every window published) as (model, start, label, scores)."""
    runners = [ModelRunner(m, RunnerSpec(h, PostConfig(), gate_db=None)) for m, h in zip(models, hops)]
    sink = MemorySink()
    pipeline = Pipeline(runners, RATE, sink, "test", split=split)
    # 777 samples lost at gap_at: not a whole number of frames
    segments = [(0, len(x))] if gap_at is None else [(0, gap_at), (gap_at + 777, len(x))]
    for begin, end in segments:
        if begin > 0:
            pipeline.gap(begin)
        for pos in range(begin, end, chunk):
            pipeline.feed(x[pos : min(pos + chunk, end)])
    pipeline.finish()
    t0 = pipeline.t0
    out = [(p.model, round((p.window_start - t0).total_seconds() * RATE), p.label, tuple(p.scores.values()))
           for p in sink.results]  # fmt: skip
    return pipeline, out


def assert_close(a: list[tuple], b: list[tuple]) -> None:
    assert [r[:3] for r in a] == [r[:3] for r in b]  # same windows, same labels
    assert np.abs(np.array([r[3] for r in a]) - np.array([r[3] for r in b])).max() <= PROBE_ATOL


def test_serve_pipeline_split_and_whole_give_the_same_results_across_a_gap(cut, speech):
    model = Model(cut["wav2tiny-keyword"])
    pipe, split = run([model], speech, [HOP], gap_at=70_001)
    _, whole = run([model], speech, [HOP], split=False, gap_at=70_001)
    assert_close(split, whole)
    scorer = pipe.runners[0].split
    assert scorer is not None and scorer.scored == len(split)  # every window from shared frames
    starts = [r[1] for r in split]
    assert 70_001 + 777 in starts  # the first window after the gap starts where audio resumed


def test_a_gap_restarts_the_frames_at_the_new_position(cut, speech):
    """After a gap the split path matches a fresh pipeline fed only what came after it."""
    model = Model(cut["wav2tiny-keyword"])
    _, gapped = run([model], speech, [HOP], gap_at=50_000)
    _, fresh = run([model], speech[50_777:], [HOP])
    after = [r for r in gapped if r[1] >= 50_777]
    assert [(r[1] - 50_777, r[2], r[3]) for r in after] == [r[1:] for r in fresh]


@pytest.mark.parametrize("chunk", [1024, 1280, 2048, 2560, 16000])
def test_results_do_not_depend_on_how_the_audio_arrives(cut, speech, chunk):
    model = Model(cut["wav2tiny-keyword"])
    _, reference = run([model], speech, [HOP], chunk=4000)
    assert run([model], speech, [HOP], chunk=chunk)[1] == reference


def test_two_models_sharing_a_front_end_give_exactly_what_each_gives_alone(cut, speech):
    keyword, cough = Model(cut["wav2tiny-keyword"]), Model(cut["wav2tiny-cough"])
    pipe, both = run([keyword, cough], speech, [HOP, 5 * 240])
    assert len(pipe.front_ends[0].streams) == 1  # one computation for both
    _, kw_alone = run([keyword], speech, [HOP])
    _, cough_alone = run([cough], speech, [5 * 240])
    assert [r for r in both if r[0] == "wav2tiny-keyword"] == kw_alone
    assert [r for r in both if r[0] == "wav2tiny-cough"] == cough_alone


def test_models_with_other_front_ends_get_their_own(cut, speech):
    pipe, _ = run([Model(cut["wav2tiny-keyword"]), Model(cut["wav2small-keyword"])], speech[:40_000], [HOP, 4000])
    assert len(pipe.front_ends[0].streams) == 2


def test_a_hop_between_frames_is_rounded_to_whole_frames_and_logged(cut, caplog):
    model = Model(cut["wav2tiny-keyword"])
    runner = ModelRunner(model, RunnerSpec(4000, PostConfig(), gate_db=None))
    with caplog.at_level(logging.INFO, logger="edgekd.split"):
        Pipeline([runner], RATE, MemorySink(), "test")
    assert runner.spec.hop_samples == runner.windower.hop == 4080
    assert "hop 250 ms -> 255 ms" in caplog.text
    assert shared_hop(1280, 240, 16000) == 1200  # 80 ms -> 75 ms
    assert shared_hop(16000, 240, 16000) == 15840  # never above the window
    assert shared_hop(100, 240, 16000) == 240  # at least one frame


def test_whole_windows_when_asked(cut, speech):
    model = Model(cut["wav2tiny-keyword"])
    pipe, _ = run([model], speech[:30_000], [4000], split=False)
    assert pipe.runners[0].split is None and pipe.runners[0].spec.hop_samples == 4000


def nudge_bias(props):
    """A body whose output bias is 0.01 off the whole graph's: fails the load check."""
    body = onnx.load_from_string(base64.b64decode(props[KEY_BODY]))
    bias = next(i for i in body.graph.initializer if list(i.dims) == [12])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.01), bias.name))
    props[KEY_BODY] = base64.b64encode(body.SerializeToString()).decode()


def test_a_file_whose_body_disagrees_runs_whole_windows_and_says_so(cut, speech, tmp_path, caplog):
    path = rewrite_props(cut["wav2tiny-keyword"], tmp_path / "nudged.onnx", nudge_bias)
    model = Model(path)
    with caplog.at_level(logging.WARNING, logger="edgekd.split"):
        pipe, got = run([model], speech[:40_000], [HOP])
    lines = [r.getMessage() for r in caplog.records if r.name == "edgekd.split"]
    assert len(lines) == 1
    assert str(path) in lines[0] and "running whole windows" in lines[0] and "0.01" in lines[0]
    assert pipe.runners[0].split is None
    assert got == run([model], speech[:40_000], [HOP], split=False)[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update({KEY_FRONTEND: p[KEY_FRONTEND].replace('"n_mels": 40', '"n_mels": -4')}), "n_mels"),
        (lambda p: p.update({KEY_FRONTEND: p[KEY_FRONTEND].replace('"hann_periodic"', '"hamming"')}), "window"),
        (lambda p: p.update({KEY_BODY: "not base64!"}), "base64"),
        (lambda p: p.update({KEY_BODY: base64.b64encode(b"not onnx").decode()}), "cannot load"),
        (lambda p: p.pop(KEY_FRONTEND), KEY_FRONTEND),
        (lambda p: p.update({KEY_FRONTEND: p[KEY_FRONTEND].replace('"sample_rate": 16000', '"sample_rate": 32000')}),
         "runs at 16000 Hz"),
    ],
)
def test_a_malformed_front_end_or_body_is_refused_naming_the_key(cut, tmp_path, change, message):
    """At load (`Model`: serve, classify, info, bench) or at the latest when the split path is built."""
    path = rewrite_props(cut["wav2tiny-keyword"], tmp_path / "bad.onnx", change)
    with pytest.raises(ModelContractError, match=message) as err:
        load_split(Model(path))
    assert str(path) in str(err.value)


def test_a_front_end_of_another_kind_runs_whole_windows(cut, tmp_path, caplog):
    path = rewrite_props(cut["wav2tiny-keyword"], tmp_path / "other.onnx",
                    lambda p: p.update({KEY_FRONTEND: '{"kind": "wav2vec2_cnn"}'}))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="edgekd.split"):
        assert load_split(Model(path)) is None
    assert "running whole windows" in caplog.text


def test_older_files_run_as_before(speech, tmp_path):
    model = Model(version1_copy(ROOT / "models" / "wav2tiny-keyword.onnx", tmp_path / "v1.onnx"))  # no front end described
    pipe, split = run([model], speech[:40_000], [4000])
    assert pipe.runners[0].split is None and pipe.runners[0].spec.hop_samples == 4000
    assert split == run([model], speech[:40_000], [4000], split=False)[1]


def test_a_stream_shorter_than_a_window_gets_its_padded_window_from_the_whole_graph(cut, speech):
    model = Model(cut["wav2tiny-keyword"])
    pipe, split = run([model], speech[:9000], [HOP])
    assert len(split) == 1 and pipe.runners[0].split.scored == 0
    assert split == run([model], speech[:9000], [HOP], split=False)[1]


def test_a_source_at_another_rate_feeds_the_front_end_the_resampled_stream(cut, speech):
    import soxr

    x48 = soxr.resample(speech[:80_000], RATE, 48_000).astype(np.float32)
    model = Model(cut["wav2tiny-keyword"])
    results = {}
    for split in (True, False):
        runner = ModelRunner(model, RunnerSpec(HOP, PostConfig(), gate_db=None))
        sink = MemorySink()
        pipe = Pipeline([runner], 48_000, sink, "test", split=split)
        for pos in range(0, len(x48), 3072):
            pipe.feed(x48[pos : pos + 3072])
        pipe.finish()
        results[split] = [(p.label, tuple(p.scores.values())) for p in sink.results]
        if split:
            assert runner.split is not None and runner.split.scored == len(sink.results) >= 15
    assert [r[0] for r in results[True]] == [r[0] for r in results[False]]
    assert np.abs(np.array([r[1] for r in results[True]]) - np.array([r[1] for r in results[False]])).max() <= PROBE_ATOL


def serve_models(paths: list[Path]) -> list[Model]:
    from edgekd.config import load_settings
    from edgekd.serve import load_models

    return load_models(load_settings(None, {"models": [{"path": str(p)} for p in paths]}, environ={}))


def test_serve_lets_the_whole_graph_go_once_the_parts_are_checked(cut, speech):
    """serve keeps one session per model: the whole graph's goes after the load check, and a
    stream's padded last window runs through the front end and body (within the check's tolerance)."""
    served = serve_models([cut["wav2tiny-keyword"]])[0]
    assert served.session is None
    whole = Model(cut["wav2tiny-keyword"])
    pipe, got = run([served], speech[:9000], [HOP])  # shorter than a window: one padded window
    assert len(got) == 1 and pipe.runners[0].split.scored == 0
    assert_close(got, run([whole], speech[:9000], [HOP], split=False)[1])
    _, longer = run([served], speech[:60_000], [HOP], gap_at=30_001)
    assert_close(longer, run([whole], speech[:60_000], [HOP], gap_at=30_001)[1])


def test_serve_keeps_the_whole_graph_where_there_are_no_checked_parts(cut, tmp_path):
    disagrees = rewrite_props(cut["wav2tiny-keyword"], tmp_path / "nudged.onnx", nudge_bias)
    older = version1_copy(ROOT / "models" / "wav2tiny-keyword.onnx", tmp_path / "v1.onnx")
    assert all(m.session is not None for m in serve_models([disagrees, older]))
