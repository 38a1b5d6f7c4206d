"""The shipped emotion models score, on the real test files, what their metadata and cards say."""

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
