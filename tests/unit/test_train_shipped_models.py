"""The shipped models score, on the real test files, what their metadata, records and cards say."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.model import Model
from edgekd_train.onnx_eval import evaluate_onnx_on_split
from edgekd_train.prepare import load_clips, protocol_split
from edgekd_train.recipe import load_recipe

pytestmark = pytest.mark.data

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in MODELS.glob("*-emotion*.onnx")))
def test_figures_in_the_metadata_are_reproduced(name, data_dir, tmp_path):
    path = MODELS / f"{name}.onnx"
    recipe = load_recipe("emotion")
    split, _ = protocol_split(load_clips(recipe.corpora, data_dir), recipe.split)
    split_path = split.write(tmp_path / "split.json")
    evals, _ = evaluate_onnx_on_split(path, split_path, "test")
    claimed = Model(path).meta.training["figures"]
    for part in ("test_tess", "test_ravdess", "test"):
        assert evals[part].n == claimed[part]["n"]
        assert evals[part].accuracy == pytest.approx(claimed[part]["accuracy"], abs=1e-3), part
    card = MODELS / f"{name.removesuffix('-int8')}.md"
    if not name.endswith("-int8"):  # the card gives the float32 file's figures
        assert f"{100 * evals['test_tess'].accuracy:.1f}%" in card.read_text()


def _record(name: str) -> dict:
    import json

    return json.loads((MODELS / f"{name}.record.json").read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wav2small-keyword", "wav2tiny-keyword"])
def test_the_keyword_records_hold_what_the_files_score_on_unseen_speakers(name, data_dir, tmp_path):
    recipe = load_recipe("keyword")
    split, _ = protocol_split(load_clips(recipe.corpora, data_dir), recipe.split)
    evals, _ = evaluate_onnx_on_split(MODELS / f"{name}.onnx", split.write(tmp_path / "split.json"), "test")
    test = evals["test"]
    claimed = Model(MODELS / f"{name}.onnx").meta.training["figures"]["test_unseen_speakers"]
    recorded = _record(name)["clips"]["test"]
    assert test.n == claimed["n"] == recorded["n"]
    assert test.accuracy == pytest.approx(claimed["accuracy"], abs=1e-6) == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert round(test.accuracy * test.n) == recorded["correct"]
    for mine, theirs in zip(test.per_class, recorded["per_class"], strict=True):
        assert (mine.label, mine.support) == (theirs["label"], theirs["support"])
        assert (mine.precision, mine.recall) == pytest.approx((theirs["precision"], theirs["recall"]), abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("task, name", [("cough", "wav2tiny-cough"), ("covid", "wav2small-covid")])
def test_the_cough_and_covid_records_hold_what_the_files_score_on_their_windows(task, name, data_dir):
    from edgekd_train.tasks.cough import cough_data
    from edgekd_train.tasks.covid import covid_data
    from edgekd_train.tasks.scoring import onnx_row

    recipe = load_recipe(task)
    d = cough_data(data_dir, recipe) if task == "cough" else covid_data(data_dir, recipe)
    figures = onnx_row(MODELS / f"{name}.onnx", d, recipe)["figures"]
    recorded = _record(name)["clips"]
    if task == "cough":
        assert [list(row) for row in figures["confusion_test"]] == recorded["test"]["confusion"]
        assert figures["figures"]["val"]["accuracy"] == pytest.approx(recorded["val"]["accuracy"], abs=1e-6)
        assert figures["bandlimited_test_speech_called_cough"] == pytest.approx(
            recorded["test"]["bandlimited_speech_called_cough"], abs=1e-6)
        return
    assert figures["threshold_from_val"] == pytest.approx(recorded["threshold_from_val"], abs=1e-6)
    for part in ("val", "test"):
        for subset, f in figures["figures"][part].items():
            for key in ("n", "positives", "roc_auc", "roc_auc_95ci", "sensitivity", "specificity", "f1"):
                assert f[key] == pytest.approx(recorded[part][subset][key], abs=1e-6), (part, subset, key)
