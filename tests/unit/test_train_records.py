"""Run records: measurements merged into models/NAME.record.json by `edgekd train record`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd_train.cards import CardError, record_path_for
from edgekd_train.cli import app
from edgekd_train.records import from_evaluation, from_streams, merge, write_record

MODELS = Path(__file__).resolve().parents[2] / "models"


def _model(tmp_path: Path, name: str = "wav2tiny-keyword") -> Path:
    path = tmp_path / f"{name}.onnx"
    shutil.copy(MODELS / f"{name}.onnx", path)
    return path


def test_an_evaluation_gives_accuracy_per_class_and_the_most_frequent_confusions(tmp_path):
    from edgekd_train.evaluate import evaluate, write_report

    labels = ("yes", "no", "up")
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 1, 2, 2, 2, 0, 2])
    write_report(tmp_path / "eval", {"test": evaluate(np.eye(3)[pred], y, labels)}, "t")
    clips = from_evaluation(tmp_path / "eval" / "report.json")["clips"]["test"]
    assert (clips["n"], clips["correct"], clips["accuracy"]) == (10, 6, 0.6)
    assert clips["top_confusions"] == [{"true": "yes", "predicted": "no", "n": 2},
                                       {"true": "no", "predicted": "up", "n": 1},
                                       {"true": "up", "predicted": "yes", "n": 1}]
    assert [c["support"] for c in clips["per_class"]] == [3, 3, 4]
    with pytest.raises(CardError, match="no evaluation 'val'.*--part"):
        from_evaluation(tmp_path / "eval" / "report.json", "val")


def test_stream_rows_go_under_the_post_processing_they_ran_with(tmp_path):
    figures = {k: 1.0 for k in ("events", "found", "recall", "recall_ci95", "false_alarms", "non_event_hours",
                                "false_alarms_per_hour", "wrong_label_events", "wrong_label_rate",
                                "latency_s_p50", "latency_s_p95", "recall_per_label")}
    rows = [{"model": "a", "post": "file's operating point", "figures": figures},
            {"model": "a", "post": "edgekd defaults", "figures": figures},
            {"model": "b", "post": "edgekd defaults", "figures": figures}]
    (tmp_path / "streams.json").write_text(json.dumps(rows))
    got = from_streams(tmp_path / "streams.json", "a", "test")["streams"]["test"]
    assert sorted(got) == ["defaults", "operating_point"] and "recall_per_label" not in got["defaults"]
    with pytest.raises(CardError, match="no rows of model 'c'"):
        from_streams(tmp_path / "streams.json", "c", "test")


def test_the_record_command_merges_and_keeps_what_it_does_not_measure(tmp_path):
    model = _model(tmp_path)
    record = record_path_for(model)
    record.write_text(json.dumps({"settings": {"epochs": 40}, "clips": {"test": {"speakers": 59, "n": 1}}}))
    from edgekd_train.evaluate import evaluate, write_report

    labels = ("yes", "no")
    write_report(tmp_path / "eval", {"test": evaluate(np.eye(2)[[0, 1, 1]], np.array([0, 1, 0]), labels)}, "t")
    result = CliRunner().invoke(app, ["record", str(model), "--evaluate", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    got = json.loads(record.read_text())
    assert got["settings"] == {"epochs": 40} and got["clips"]["test"]["speakers"] == 59
    assert got["clips"]["test"]["n"] == 3 and got["model"] == "wav2tiny-keyword" and len(got["sha256"]) == 64
    bare = CliRunner().invoke(app, ["record", str(model)])
    assert bare.exit_code != 0 and "give --evaluate, --score or --streams" in bare.output


def test_a_record_of_another_file_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(CardError, match="not this one"):
        write_record(path, "m", "1" * 64, {"clips": {}})


def test_merge_lays_mappings_over_mappings_and_replaces_the_rest():
    assert merge({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"c": [2]}, "e": 3}) == {"a": {"b": 1, "c": [2]}, "d": 2, "e": 3}
