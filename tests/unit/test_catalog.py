"""Models by name (edgekd.catalog): a path first, then $EDGEKD_MODELS in order, then the shipped
models; a value that finds nothing names the places and the known names. `edgekd models` lists
what a name finds, with the figures the files carry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgekd import catalog, cli
from edgekd.catalog import SHIPPED_DIR, ModelNotFoundError, known_models, locate
from tests.cli_in_process import run

SHIPPED_NAMES = {"wav2small-covid", "wav2small-emotion", "wav2small-keyword", "wav2tiny-cough", "wav2tiny-emotion",
                 "wav2tiny-keyword"}  # fmt: skip


@pytest.fixture
def two_dirs(tmp_path, energy_onnx):
    """Two $EDGEKD_MODELS directories: both hold `dup`, only the second holds `only-b`, and the
    first holds a file named like a shipped model."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for f in (a / "dup.onnx", b / "dup.onnx", b / "only-b.onnx", a / "wav2tiny-keyword.onnx"):
        f.write_bytes(energy_onnx.read_bytes())
    return a, b, {"EDGEKD_MODELS": f"{a}{os.pathsep}{b}"}


def test_the_shipped_models_are_found_by_name_without_edgekd_models():
    assert set(known_models({})) == SHIPPED_NAMES
    assert locate("wav2tiny-keyword", {}) == SHIPPED_DIR / "wav2tiny-keyword.onnx"
    assert locate("wav2tiny-keyword.onnx", {}) == SHIPPED_DIR / "wav2tiny-keyword.onnx"


def test_an_existing_path_wins_over_a_name(tmp_path, monkeypatch, two_dirs):
    a, _, env = two_dirs
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dup").write_text("not a model")  # a file in the working directory named like a model
    assert locate("dup", env) == Path("dup")
    assert locate(str(a / "dup.onnx"), env) == a / "dup.onnx"


def test_edgekd_models_directories_come_in_order_and_before_the_shipped_models(two_dirs):
    a, b, env = two_dirs
    assert locate("dup", env) == a / "dup.onnx"
    assert locate("only-b", env) == b / "only-b.onnx"
    assert locate("wav2tiny-keyword", env) == a / "wav2tiny-keyword.onnx"  # shadows the shipped one
    assert locate("wav2tiny-cough", env) == SHIPPED_DIR / "wav2tiny-cough.onnx"
    assert known_models(env)["wav2tiny-keyword"].origin == "$EDGEKD_MODELS"
    assert known_models(env)["wav2tiny-cough"].origin == catalog.SHIPPED


def test_an_edgekd_models_entry_may_be_one_file(energy_onnx):
    assert locate("energy", {"EDGEKD_MODELS": str(energy_onnx)}) == energy_onnx


def test_an_unknown_name_names_the_places_and_lists_the_known_names(two_dirs):
    a, b, env = two_dirs
    with pytest.raises(ModelNotFoundError) as err:
        locate("wav2tiny-keywrd", env)
    text = str(err.value)
    assert text.startswith("model wav2tiny-keywrd: no such file, and no model named 'wav2tiny-keywrd' in ")
    assert f"$EDGEKD_MODELS ({a}), then $EDGEKD_MODELS ({b}), then shipped with edgekd ({SHIPPED_DIR})" in text
    assert "known names: dup, only-b, wav2small-covid" in text and "edgekd models" in text


def test_without_edgekd_models_the_message_says_it_is_unset():
    with pytest.raises(ModelNotFoundError) as err:
        locate("nope", {})
    assert f"$EDGEKD_MODELS (unset), then shipped with edgekd ({SHIPPED_DIR})" in str(err.value)


def test_a_missing_path_is_a_path_not_a_name_and_points_at_the_name_it_ends_in(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        locate(tmp_path / "models" / "wav2tiny-cough.onnx", {})
    assert "no such file; edgekd knows a model named wav2tiny-cough: --model wav2tiny-cough" in str(err.value)
    with pytest.raises(ModelNotFoundError) as err:
        locate(tmp_path / "elsewhere.onnx", {})
    assert "knows a model" not in str(err.value)


def test_serve_takes_a_name_and_an_unknown_name_is_one_line_and_exit_2(monkeypatch, capsys, two_dirs):
    a, _, env = two_dirs
    monkeypatch.setenv("EDGEKD_MODELS", env["EDGEKD_MODELS"])
    clip = Path(cli.__file__).parent / "assets" / "YAF_bar_angry.flac"
    code, out, err = run(monkeypatch, capsys, "serve", "--model", "dup", "--source", clip, "--stdout")
    assert code == 0, err
    assert '"model":"energy-test"' in out.splitlines()[0]
    code, _, err = run(monkeypatch, capsys, "serve", "--model", "nope", "--source", clip, "--stdout")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "known names: dup" in err


def test_info_takes_a_name(monkeypatch, capsys):
    monkeypatch.delenv("EDGEKD_MODELS", raising=False)
    code, out, _ = run(monkeypatch, capsys, "info", "wav2tiny-cough", "--json")
    assert code == 0 and json.loads(out)["path"] == str(SHIPPED_DIR / "wav2tiny-cough.onnx")


def test_models_lists_the_shipped_models_with_the_figures_their_files_carry(monkeypatch, capsys):
    monkeypatch.delenv("EDGEKD_MODELS", raising=False)
    code, out, _ = run(monkeypatch, capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == SHIPPED_NAMES
    cough = rows["wav2tiny-cough"]
    assert cough["task"] == "cough" and cough["labels"] == ["cough", "speech", "other"] and cough["from"] == catalog.SHIPPED
    assert cough["bytes"] == (SHIPPED_DIR / "wav2tiny-cough.onnx").stat().st_size
    assert set(cough["streams"]) >= {"recall", "false_alarms_per_hour", "events"}
    assert rows["wav2tiny-emotion"]["streams"] is None  # no operating point in the file
    assert set(rows["wav2small-emotion"]["clips"]) == {"tess", "ravdess"}
    assert set(rows["wav2small-covid"]["clips"]["test"]) >= {"roc_auc", "n"}

    code, out, _ = run(monkeypatch, capsys, "models")
    lines = out.splitlines()
    assert code == 0 and lines[1].split()[:3] == ["NAME", "TASK", "SIZE"]
    row = next(line for line in lines if line.startswith("wav2tiny-cough "))
    assert "recall " in row and " FA/h (" in row and row.endswith("cough, speech, other")


def test_a_broken_file_in_edgekd_models_is_named_and_the_rest_still_listed(monkeypatch, capsys, tmp_path):
    (tmp_path / "broken.onnx").write_text("not onnx")
    monkeypatch.setenv("EDGEKD_MODELS", str(tmp_path))
    code, out, err = run(monkeypatch, capsys, "models")
    assert code == 1 and "broken.onnx" in err and "wav2tiny-cough" in out
