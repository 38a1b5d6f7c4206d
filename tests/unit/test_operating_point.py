"""Contract version 2 at the runtime: background labels and the model's operating point.

Real ONNX files (tests/onnx_models.energy_model) carry the metadata; the runner is built the way
`serve` and `classify` build it, and fed real samples through the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.config import load_settings
from edgekd.contract import (
    KEY_BACKGROUND,
    KEY_CONTRACT,
    KEY_OPERATING_POINT,
    ModelContractError,
    ModelMetadata,
    OperatingPoint,
    parse_props,
)
from edgekd.daemon import build_runners
from edgekd.model import Model
from edgekd.pipeline import Pipeline
from edgekd.postprocess import PostConfig, PostProcessor
from edgekd.sink import MemorySink
from tests.onnx_models import energy_model

RATE = 16000
LABELS = ("quiet", "loud")
OP = {"hop_s": 0.5, "smoothing": 2, "threshold": 0.8, "thresholds": {"loud": 0.9}, "refractory_s": 3.0,
      "mode": "events", "aim": "best recall at <= 1 false alarm per hour", "chosen_on": "validation streams, seed 1",
      "validation": {"recall": 0.9, "false_alarms_per_hour": 0.8}}


def base_props(**extra: str) -> dict[str, str]:
    meta = ModelMetadata("loudness", LABELS, RATE, RATE, False, "m", "1", contract_version=1)
    props = meta.to_props()
    props.update(extra)
    return props


def model_file(tmp_path: Path, **props: str | None) -> Path:
    return energy_model(tmp_path / "m.onnx", labels=LABELS, props_override={KEY_CONTRACT: "2", **props})


def runner_for(tmp_path: Path, op: dict | None, overrides: dict | None = None, background: list[str] | None = None):
    props: dict[str, str | None] = {}
    if op is not None:
        props[KEY_OPERATING_POINT] = json.dumps(op)
    if background is not None:
        props[KEY_BACKGROUND] = json.dumps(background)
    path = model_file(tmp_path, **props)
    settings = load_settings(overrides={"models": [{"path": str(path)}], **(overrides or {})}, environ={})
    return build_runners(settings, [Model(path)])[0]


def test_a_version_1_file_reads_as_before_with_background_assumed_from_label_names():
    meta = parse_props("m.onnx", ModelMetadata("keyword", ("yes", "_unknown_", "_silence_"), RATE, RATE, False,
                                               "kw", "1", contract_version=1).to_props())
    assert meta.contract_version == 1 and meta.operating_point is None and meta.background_labels is None
    assert meta.background == ("_unknown_", "_silence_")


def test_a_declared_empty_background_list_means_every_label_is_an_answer():
    meta = parse_props("m.onnx", base_props(**{KEY_BACKGROUND: "[]"}))
    assert meta.background == ()


def test_the_operating_point_round_trips_through_the_file_props():
    meta = ModelMetadata("loudness", LABELS, RATE, RATE, False, "m", "1", background_labels=("quiet",),
                         operating_point=OperatingPoint(**{**OP, "thresholds": {"loud": 0.9}}))
    again = parse_props("m.onnx", meta.to_props())
    assert again.operating_point == meta.operating_point and again.background == ("quiet",)
    assert again.contract_version == 2


@pytest.mark.parametrize(
    "key, value, expected",
    [
        (KEY_BACKGROUND, '["nope"]', "not labels"),
        (KEY_BACKGROUND, '"quiet"', "JSON array"),
        (KEY_BACKGROUND, "[quiet", "not JSON"),
        (KEY_OPERATING_POINT, '{"smoothing": 2}', "lacks hop_s"),
        (KEY_OPERATING_POINT, '{"hop_s": 0.5, "treshold": 0.5}', "unknown fields ['treshold']"),
        (KEY_OPERATING_POINT, '{"hop_s": 0.5, "threshold": 1.5}', "threshold=1.5"),
        (KEY_OPERATING_POINT, '{"hop_s": 0.5, "thresholds": {"yes": 0.5}}', "not labels"),
        (KEY_OPERATING_POINT, '{"hop_s": 2.0}', "hop_s=2.0"),
        (KEY_OPERATING_POINT, '{"hop_s": 0.5, "smoothing": 1.5}', "smoothing=1.5"),
        (KEY_OPERATING_POINT, '{"hop_s": 0.5, "mode": "loud"}', "mode='loud'"),
        (KEY_OPERATING_POINT, '[0.5]', "JSON object"),
        (KEY_CONTRACT, "3", "contract version '3' is not supported"),
    ],
)
def test_malformed_version_2_keys_are_refused_naming_the_key(key, value, expected):
    with pytest.raises(ModelContractError) as err:
        parse_props("m.onnx", base_props(**{key: value}))
    assert expected in str(err.value) and "m.onnx" in str(err.value)
    if key != KEY_CONTRACT:
        assert key in str(err.value)


def test_serve_uses_the_operating_point_from_the_file(tmp_path):
    r = runner_for(tmp_path, OP)
    assert r.spec.hop_samples == RATE // 2
    assert (r.post.config.smoothing, r.post.config.threshold, r.post.config.refractory_s) == (2, 0.8, 3.0)
    assert r.post.config.thresholds == {"loud": 0.9} and r.post.config.mode == "events"


def test_without_an_operating_point_edgekd_defaults_apply(tmp_path):
    r = runner_for(tmp_path, None)
    assert (r.post.config.smoothing, r.post.config.threshold, r.post.config.mode) == (1, 0.5, "all")
    assert r.spec.hop_samples == RATE // 4


def test_config_defaults_and_flags_override_the_file_and_a_global_threshold_replaces_per_label_ones(tmp_path):
    r = runner_for(tmp_path, OP, {"defaults": {"threshold": 0.6, "mode": "all"}})
    assert r.post.config.threshold == 0.6 and r.post.config.thresholds == {} and r.post.config.mode == "all"
    assert r.post.config.smoothing == 2 and r.post.config.refractory_s == 3.0  # not set by the user: the file's


def test_per_label_thresholds_from_the_config_are_laid_over_the_files(tmp_path):
    path = model_file(tmp_path, **{KEY_OPERATING_POINT: json.dumps({**OP, "thresholds": {"loud": 0.9, "quiet": 0.7}})})
    settings = load_settings(overrides={"models": [{"path": str(path), "thresholds": {"loud": 0.95}}]}, environ={})
    r = build_runners(settings, [Model(path)])[0]
    assert r.post.config.thresholds == {"loud": 0.95, "quiet": 0.7}


def test_a_different_hop_keeps_the_smoothing_duration(tmp_path):
    r = runner_for(tmp_path, {**OP, "smoothing": 4}, {"hops": {"m": 0.25}})
    assert r.spec.hop_samples == RATE // 4 and r.post.config.smoothing == 8


def test_model_table_overrides_config_defaults(tmp_path):
    path = model_file(tmp_path)
    settings = load_settings(
        overrides={"defaults": {"smoothing": 3, "mode": "events"}, "models": [{"path": str(path), "smoothing": 5}]},
        environ={},
    )
    r = build_runners(settings, [Model(path)])[0]
    assert r.post.config.smoothing == 5 and r.post.config.mode == "events"


@pytest.mark.parametrize("mode", ["all", "events"])
def test_background_labels_never_come_out_as_detections(mode):
    post = PostProcessor(LABELS, PostConfig(threshold=0.5, mode=mode, background=("quiet",)))
    quiet, loud = np.array([0.99, 0.01]), np.array([0.01, 0.99])
    decisions = [post.step(s, t) for t, s in enumerate([quiet, loud, quiet, quiet, loud])]
    assert [d.detected for d in decisions if d is not None and d.label == "quiet"] == [False] * (
        sum(1 for d in decisions if d is not None and d.label == "quiet")
    )
    assert [d.label for d in decisions if d is not None and d.detected] == ["loud", "loud"]


def test_a_stream_through_the_pipeline_detects_only_the_foreground_label_with_the_files_refractory(tmp_path):
    r = runner_for(tmp_path, {"hop_s": 0.25, "threshold": 0.6, "refractory_s": 2.0, "mode": "all"}, background=["quiet"])
    sink = MemorySink()
    pipeline = Pipeline([r], RATE, sink, "dev")
    rng = np.random.default_rng(0)
    silence = np.zeros(3 * RATE, dtype=np.float32)
    noise = (0.3 * rng.standard_normal(3 * RATE)).astype(np.float32)
    pipeline.feed(np.concatenate([silence, noise, silence]))
    pipeline.finish()
    assert {p.label for p in sink.results} == {"quiet", "loud"}
    assert not any(p.detected for p in sink.results if p.label == "quiet")
    hits = [p.window_end.timestamp() for p in sink.results if p.detected]
    assert hits and all(b - a >= 2.0 - 1e-3 for a, b in zip(hits, hits[1:]))
    assert len(hits) == 2  # 3 s of loud audio, one detection every 2 s of refractory
